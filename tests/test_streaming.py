"""Streaming equals the whole clip: for every stream model, whole / 1 / 2 / 3 frames per call."""

import pytest
import torch

from conftest import randomize
from movinet.models import ARCHS, TracedStream, build, optimize_for_inference

T, H, W = 7, 40, 56


def _stream(model, clip, chunk):
    state = model.init_state(clip.shape[0], clip.shape[-2:])
    for start in range(0, clip.shape[2], chunk):
        logits, state = model(clip[:, :, start : start + chunk], state)
    return logits, state


@pytest.mark.parametrize("arch", ARCHS)
def test_stream_equals_whole_clip(arch):
    torch.manual_seed(0)  # the weights randomize() leaves alone come from the global generator
    model = randomize(build(arch, "stream", 10), seed=1)
    clip = torch.rand(2, 3, T, H, W, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(clip)
        scale = whole.abs().max().item()
        assert scale > 0.1  # the logits carry signal, so the tolerance below means something
        for chunk in (1, 2, 3):
            logits, state = _stream(model, clip, chunk)
            assert (logits - whole).abs().max().item() <= 1e-5 * scale, f"chunks of {chunk}"
            assert state["frame_count"].item() == T


def test_stream_state_is_per_video():
    model = randomize(build("a0", "stream", 4))
    a, b = torch.rand(1, 3, 4, H, W), torch.rand(1, 3, 4, H, W)
    with torch.no_grad():
        _, state_a = _stream(model, a, 1)
        fresh, _ = _stream(model, b, 1)
        # Feeding b after a without a new state gives a different answer (the state matters) ...
        carried, _ = model(b, state_a)
    assert not torch.allclose(fresh, carried)
    assert torch.allclose(fresh, model(b), atol=1e-5)


def test_causal_prefix_is_independent_of_future_frames():
    model = randomize(build("a1", "stream", 4))
    clip = torch.rand(1, 3, 6, H, W)
    other = clip.clone()
    other[:, :, 4:] = torch.rand(1, 3, 2, H, W)
    with torch.no_grad():
        assert torch.allclose(model(clip[:, :, :4]), model(other[:, :, :4]))
        assert not torch.allclose(model(clip), model(other))


def test_fast_path_equals_model():
    for variant in ("base", "stream"):
        model = randomize(build("a0", variant, 6), seed=3)
        fast = optimize_for_inference(model)
        clip = torch.rand(1, 3, 5, 64, 64)
        with torch.inference_mode():
            ref, out = model(clip), fast(clip)
        assert (ref - out).abs().max().item() <= 1e-5 * ref.abs().max().item()
    state = fast.init_state(1, (64, 64))
    with torch.inference_mode():
        for t in range(5):
            logits, state = fast(clip[:, :, t : t + 1], state)
    assert (logits - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    assert model.training is False and any(p.requires_grad for p in model.parameters())


def test_state_for_another_size_or_batch_is_refused():
    model = build("a0", "stream", 3).eval()
    state = model.init_state(1, (64, 64))
    with torch.no_grad(), pytest.raises(ValueError, match="init_state"):
        model(torch.rand(1, 3, 1, 96, 96), state)
    with torch.no_grad(), pytest.raises(ValueError, match="2 of"):
        model(torch.rand(2, 3, 1, 64, 64), state)


def test_base_model_cannot_stream():
    model = build("a0", "base", 3)
    with pytest.raises(ValueError, match="cannot stream"):
        model.init_state(1)


def test_traced_stream_equals_model():
    model = randomize(build("a2", "stream", 4), seed=7)
    traced = TracedStream(model, image_size=(48, 40))
    clip = torch.rand(1, 3, 4, 48, 40)
    state = traced.init_state()
    for t in range(4):
        logits, state = traced(clip[:, :, t : t + 1], state)
    with torch.no_grad():
        ref = model(clip)
    assert (logits - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    with pytest.raises(ValueError, match="traced for inputs"):
        traced(torch.rand(1, 3, 1, 64, 64), state)


def test_stream_counters_and_sums_stay_float32_in_any_precision():
    """In bf16 a frame counter stops at 256 and running sums stop growing: state accumulators are float32,
    the temporal buffers take the model's dtype, and the logits come out in it."""
    model = build("a0", "stream").eval()
    state = model.init_state(1, 32, dtype=torch.bfloat16)
    assert state["frame_count"].dtype == state["head.sum"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for k, v in state.items() if k.endswith("se_sum"))
    assert all(v.dtype == torch.bfloat16 for k, v in state.items() if k.endswith("buffer"))
    # float64 runs the mixed-dtype path on the CPU (bf16 3-D pooling is CUDA-only): the same answer
    torch.manual_seed(0)
    clip = torch.rand(1, 3, 6, 32, 32)
    with torch.inference_mode():
        ref = model(clip)
        double = build("a0", "stream").eval()
        double.load_state_dict(model.state_dict())
        double = double.double()
        state = double.init_state(1, 32, dtype=torch.float64)
        for t in range(6):
            out, state = double(clip[:, :, t : t + 1].double(), state)
    assert out.dtype == torch.float64 and state["frame_count"].item() == 6.0
    torch.testing.assert_close(out.float(), ref, rtol=1e-5, atol=1e-6)
