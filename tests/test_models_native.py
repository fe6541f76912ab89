"""Our C++ kernel for the stream step (``movinet::feature_step``): the spatial depthwise conv and
the causal temporal conv of one frame against the same convs as PyTorch ops, for every stride,
kernel size, channel count (vector blocks and scalar tails), padding, map smaller than the kernel,
batch and buffer length; its input checks; and the build that falls back when there is no compiler."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import require_native_kernel
from movinet.models.layers import same_output_size, same_padding


@pytest.fixture(autouse=True)
def _kernel():
    require_native_kernel()


def _reference(x, weight, bias, stride, spatial_act, past=None, taps=None, tbias=None, temporal_act=False):
    """The same step as PyTorch ops, NCHW: TF-"same" pad, depthwise conv2d, then the temporal taps."""
    kh, kw, e = weight.shape
    h, w = x.shape[1:3]
    top, bottom = same_padding(h, kh, stride)
    left, right = same_padding(w, kw, stride)
    image = F.pad(x.permute(0, 3, 1, 2), (left, right, top, bottom))
    frame = F.conv2d(image, weight.permute(2, 0, 1)[:, None], bias, stride=stride, groups=e)
    frame = (F.hardswish(frame) if spatial_act else frame).permute(0, 2, 3, 1)
    if past is None:
        return frame, None
    k = past.shape[1]
    y = tbias + frame * taps[k]
    for t in range(k):
        y = y + past[:, t] * taps[t]
    return (F.hardswish(y) if temporal_act else y), torch.cat([past[:, 1:], frame[:, None]], 1)


def _run(batch, h, w, e, k, stride, frames, acts=(True, True), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, h, w, e, generator=gen)
    weight, bias = torch.randn(k, k, e, generator=gen), torch.randn(e, generator=gen)
    oh, ow = same_output_size(h, stride), same_output_size(w, stride)
    top, left = same_padding(h, k, stride)[0], same_padding(w, k, stride)[0]
    temporal = frames > 0
    past = torch.randn(batch, frames, oh, ow, e, generator=gen) if temporal else None
    taps = torch.randn(frames + 1, e, generator=gen) if temporal else None
    tbias = torch.randn(e, generator=gen) if temporal else None
    out = torch.ops.movinet.feature_step(
        x, weight, bias, stride, top, left, oh, ow, acts[0], past, taps, tbias, acts[1] and temporal
    )
    ref = _reference(x, weight, bias, stride, acts[0], past, taps, tbias, acts[1] and temporal)
    return out, ref, past


@pytest.mark.parametrize(
    ("batch", "h", "w", "e", "k", "stride", "frames"),
    [
        (1, 14, 14, 240, 3, 1, 2),  # A2's 14x14 blocks: 32-channel blocks, paired columns
        (1, 9, 11, 40, 5, 2, 4),  # stride 2, odd sizes, TF's extra pad at the bottom/right
        (2, 8, 6, 13, 3, 2, 1),  # a batch; 13 channels: an 8-channel block and a scalar tail
        (1, 7, 7, 480, 5, 1, 0),  # no temporal conv (kt = 1)
        (1, 2, 3, 24, 5, 1, 2),  # a map smaller than the kernel: no column has every tap
        (1, 1, 1, 8, 3, 2, 3),  # 1x1 map, stride 2
        (1, 5, 12, 72, 1, 1, 2),  # 1x1 kernel
    ],
)
def test_kernel_equals_the_convs_as_pytorch_ops(batch, h, w, e, k, stride, frames):
    (out, ref, past) = _run(batch, h, w, e, k, stride, frames)
    y, ref_y = out[0], ref[0]
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-5)
    if frames:
        next_buffer, ref_next = out[1], ref[1]
        assert torch.equal(next_buffer[:, :-1], past[:, 1:])  # the older frames move, bit for bit
        torch.testing.assert_close(next_buffer, ref_next, rtol=1e-5, atol=1e-5)
    else:
        assert len(out) == 1


@pytest.mark.parametrize("acts", [(False, False), (True, False), (False, True)])
def test_each_activation_is_applied_only_where_asked(acts):
    (out, ref, _) = _run(1, 6, 6, 16, 3, 1, 2, acts=acts, seed=3)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-5)


def test_wrong_inputs_are_refused_with_the_field_named():
    x, w, b = torch.zeros(1, 4, 4, 8), torch.zeros(3, 3, 8), torch.zeros(8)
    op = torch.ops.movinet.feature_step
    with pytest.raises(RuntimeError, match="x must be contiguous"):
        op(x.transpose(1, 2), w, b, 1, 1, 1, 4, 4, True, None, None, None, False)
    with pytest.raises(RuntimeError, match=r"past has shape \[1, 2, 3, 4, 8\], expected \[1, 2, 4, 4, 8\]"):
        op(x, w, b, 1, 1, 1, 4, 4, True, torch.zeros(1, 2, 3, 4, 8), torch.zeros(3, 8), b, True)
    with pytest.raises(RuntimeError, match="bias has shape"):
        op(x, w, torch.zeros(7), 1, 1, 1, 4, 4, True, None, None, None, False)
    with pytest.raises(RuntimeError, match="must be CPU float32"):
        op(x.double(), w, b, 1, 1, 1, 4, 4, True, None, None, None, False)
    with pytest.raises(RuntimeError, match="past, taps and tbias come together"):
        op(x, w, b, 1, 1, 1, 4, 4, True, torch.zeros(1, 1, 4, 4, 8), None, None, False)


def _fresh_process(tmp_path, **env):
    """``native.available()`` in a new process with an empty extension cache and ``env``."""
    code = "from movinet.models import native; print('AVAILABLE', native.available())"
    run_env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=300)


def test_without_a_compiler_it_warns_once_and_falls_back(tmp_path):
    result = _fresh_process(tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    assert result.returncode == 0, result.stderr
    assert "AVAILABLE False" in result.stdout
    assert result.stderr.count("movinet's native stream kernel is not available") == 1
    assert "Install a C++ compiler (g++) and ninja" in result.stderr


def test_switched_off_it_builds_nothing(tmp_path):
    result = _fresh_process(tmp_path, MOVINET_NATIVE_KERNELS="0")
    assert "AVAILABLE False" in result.stdout
    assert not (tmp_path / "ext").exists()  # no build was even tried
    assert "not available" not in result.stderr
