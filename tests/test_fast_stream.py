"""The per-frame CPU stream step (``FrameStep``, what ``TracedStream`` runs on the CPU in float32)
is the model: the same logits and the same state, frame by frame, for every arch, batch size,
frames per call and per-clip frame counter; elsewhere ``TracedStream`` falls back to the traced graph."""

import pytest
import torch

from conftest import randomize, require_native_kernel
from movinet.models import ARCHS, TracedStream, build, optimize_for_inference
from movinet.models.fast import FrameStep

H, W = 40, 32  # small and not square: every block still sees a map of at least 2x2


def _relative(a, b):
    return (a - b).abs().max().item() / b.abs().max().item()


def _assert_same_state(ours, ref):
    """Each state tensor within 1e-5 of its largest value, the criterion the logits meet (stream =
    clip): element-wise, A5's running head sum (values in the hundreds after 50 layers of float32)
    sits at 0.5-1.2x an rtol of 1e-5 on either path, depending on the random weights; relative to
    its largest value it is at 2e-6 at worst (A0-A5, three weight seeds, both paths)."""
    assert sorted(ours) == sorted(ref)
    for name in ref:
        assert ours[name].shape == ref[name].shape, name
        scale = max(ref[name].abs().max().item(), 1e-6)
        assert (ours[name] - ref[name]).abs().max().item() <= 1e-5 * scale, name


@pytest.mark.parametrize("native", ["kernel", "aten"])
@pytest.mark.parametrize("arch", ARCHS)
def test_frame_step_equals_the_model_frame_by_frame_and_the_clip(arch, native, monkeypatch):
    """Both forms of the step: with our kernel for the blocks' convs, and with it switched off."""
    if native == "kernel":
        require_native_kernel()
    else:
        monkeypatch.setenv("MOVINET_NATIVE_KERNELS", "0")
    torch.manual_seed(4)  # the conv weights too: the same model whatever ran before in the process
    model = randomize(build(arch, "stream", 10), seed=4)
    traced = TracedStream(model, image_size=(H, W))
    assert traced._frame_step  # the CPU float32 path, not the fallback
    assert ("movinet::feature_step" in str(traced._graph.inlined_graph)) == (native == "kernel")
    clip = torch.rand(1, 3, 3, H, W, generator=torch.Generator().manual_seed(5))
    ours, ref = traced.init_state(), model.init_state(1, (H, W))
    with torch.no_grad():
        for t in range(3):
            logits, ours = traced(clip[:, :, t : t + 1], ours)
            expected, ref = model(clip[:, :, t : t + 1], ref)
            assert _relative(logits, expected) <= 1e-5, f"frame {t}"
        whole = model(clip)
    assert _relative(logits, whole) <= 1e-5
    _assert_same_state(ours, ref)


def test_batch_with_per_clip_frame_counts_and_several_frames_per_call():
    """Two clips that started at different times (a (2,) frame counter, as the stream batcher
    stacks them), two frames per call: the same as the model from the same stacked state."""
    model = randomize(build("a1", "stream", 6), seed=6)
    fast = optimize_for_inference(model)
    early = torch.rand(1, 3, 3, H, W)
    with torch.no_grad():
        _, state_a = fast(early, fast.init_state(1, (H, W)))
    state_b = fast.init_state(1, (H, W))
    stacked = {k: torch.cat([state_a[k], state_b[k]]) for k in state_a}
    assert stacked["frame_count"].tolist() == [3.0, 0.0]
    traced = TracedStream(model, image_size=(H, W), batch_size=2, frames_per_step=2)
    frames = torch.rand(2, 3, 2, H, W)
    logits, ours = traced(frames, dict(stacked))
    with torch.no_grad():
        expected, ref = fast(frames, dict(stacked))
    assert _relative(logits, expected) <= 1e-5
    _assert_same_state(ours, ref)


def test_states_interchange_with_the_model():
    """A stream can start on the model and go on with the traced step, and back: one state."""
    model = randomize(build("a0", "stream", 5), seed=7)
    traced = TracedStream(model, image_size=(H, W))
    clip = torch.rand(1, 3, 4, H, W)
    with torch.no_grad():
        _, state = model(clip[:, :, :2], model.init_state(1, (H, W)))
        _, state = traced(clip[:, :, 2:3], state)
        logits, _ = model(clip[:, :, 3:], state)
        whole = model(clip)
    assert _relative(logits, whole) <= 1e-5


def test_frame_step_needs_a_folded_float32_cpu_stream_model():
    stream = build("a0", "stream", 3).eval()
    assert not FrameStep.supports(stream)  # BN not folded yet
    assert FrameStep.supports(optimize_for_inference(stream))
    assert not FrameStep.supports(optimize_for_inference(build("a0", "base", 3)))
    assert not FrameStep.supports(optimize_for_inference(stream.double()))
    with pytest.raises(ValueError, match="BN-folded float32"):
        FrameStep(stream, 1, (H, W), list(stream.init_state(1, (H, W))))


def test_other_dtypes_fall_back_to_the_traced_graph():
    model = randomize(build("a0", "stream", 4), seed=8).double()
    traced = TracedStream(model, image_size=(H, W))
    assert not traced._frame_step
    clip = torch.rand(1, 3, 2, H, W, dtype=torch.float64)
    state = traced.init_state()
    for t in range(2):
        logits, state = traced(clip[:, :, t : t + 1], state)
    with torch.no_grad():
        assert _relative(logits, model(clip)) <= 1e-9


def test_freed_memory_is_kept_once_and_can_be_left_alone(monkeypatch):
    import platform

    from movinet.models import fast

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert fast.keep_freed_memory() and fast.keep_freed_memory()  # in force, and idempotent
    monkeypatch.setattr(fast, "_allocator_kept", False)
    monkeypatch.setenv("MOVINET_KEEP_FREED_MEMORY", "0")
    assert fast.keep_freed_memory() is False
