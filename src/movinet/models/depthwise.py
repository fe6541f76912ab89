"""Depthwise 3-D convolution for training on the CPU, with a backward pass built from forward convs.

PyTorch's CPU backward for depthwise ``conv3d`` (``groups == channels``) is 10-20x slower than its
forward: training MoViNet-A0 on the demo's clips spent 42 % of each step in it (docs/benchmarks.md).
The gradients are convolutions themselves, so this module computes them with the fast kernels:

* the input's gradient is the forward depthwise conv of the output's gradient with the kernel
  flipped (a transposed conv); a strided conv's splits into one small stride-1 conv per phase of
  the stride, each filling every ``s``-th input cell;
* the kernel's gradient comes from PyTorch's own ``convolution_backward``, asked for the weight
  only and given channels-last-3d tensors, where it is about 3x faster than on contiguous ones.

The forward pass is ``F.conv3d`` itself, so outputs are bit-identical; gradients agree with
PyTorch's to float32 rounding (tests/test_models_depthwise.py). ``ConvBN`` uses this only where it
pays: float32 on the CPU, with gradients being recorded, outside autocast.
``fast_depthwise_backward(False)`` turns it off (the benchmark's baseline; a fallback to PyTorch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

_CHANNELS_LAST = torch.channels_last_3d
_enabled = True


@contextlib.contextmanager
def fast_depthwise_backward(enabled: bool) -> Iterator[None]:
    """Within the block, ``ConvBN`` uses (True) or bypasses (False) this module's backward."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def applies(x: Tensor, weight: Tensor) -> bool:
    """Whether a depthwise conv of ``x`` with ``weight`` should go through ``depthwise_conv3d``."""
    return (
        _enabled
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def depthwise_conv3d(x: Tensor, weight: Tensor, stride: tuple[int, ...], padding: tuple[int, ...]) -> Tensor:
    """``F.conv3d(x, weight, None, stride, padding, groups=channels)`` with the fast backward."""
    return _DepthwiseConv3d.apply(x, weight, tuple(stride), tuple(padding))


def _input_grad(grad: Tensor, weight: Tensor, input_shape: torch.Size, stride, padding) -> Tensor:
    """The gradient of a depthwise conv's input (a transposed conv; strides ``(1, s, s)``) as stride-1
    convs of the output's gradient with the flipped kernel. A stride ``s`` in H and W splits it into
    ``s × s`` phases: the input cells ``i`` with ``(i + p) % s == r`` get only the taps
    ``k ≡ r (mod s)``, so each phase is a small stride-1 conv written to every ``s``-th cell (no
    zero-spread copy of the gradient)."""
    channels, kernel = weight.shape[0], weight.shape[2:]
    pad = [k - 1 - p for k, p in zip(kernel, padding)]  # a full correlation: k - 1 - p on each side
    s = stride[1]
    if s == 1:
        flipped = weight.flip(2, 3, 4).contiguous(memory_format=_CHANNELS_LAST)
        return F.conv3d(grad, flipped, None, 1, pad, 1, channels)
    # (N, T, H, W, C): channels-last's order in memory, written through strided views (fast).
    out = grad.new_zeros([input_shape[0], *input_shape[2:], channels])
    for rh in range(s):
        for rw in range(s):
            taps = weight[:, :, :, rh::s, rw::s]
            if taps.shape[3] == 0 or taps.shape[4] == 0:
                continue  # no tap reaches these cells: their gradient is zero
            flipped = taps.flip(2, 3, 4).contiguous(memory_format=_CHANNELS_LAST)
            full = F.conv3d(grad, flipped, None, 1, [pad[0], taps.shape[3] - 1, taps.shape[4] - 1], 1, channels)
            rows = _phase_cells(input_shape[3], padding[1], s, rh, full.shape[3])
            cols = _phase_cells(input_shape[4], padding[2], s, rw, full.shape[4])
            if rows is not None and cols is not None:
                phase = full[:, :, :, rows[1], cols[1]].permute(0, 2, 3, 4, 1)
                out[:, :, rows[0], cols[0]] = phase
    return out.permute(0, 4, 1, 2, 3)


def _phase_cells(size: int, pad: int, stride: int, phase: int, available: int) -> tuple[slice, slice] | None:
    """For one phase of a strided dimension of ``size`` input cells: the cells it fills (every
    ``stride``-th) and the phase conv's outputs that go there (cell ``s·q + r - p`` takes output
    ``q``; outputs past ``available`` are zero, and those cells stay so). None: it fills no cell."""
    first = -(-(pad - phase) // stride)
    last = min((size - 1 + pad - phase) // stride, available - 1)
    if last < first:
        return None
    cell = stride * first + phase - pad
    return slice(cell, cell + (last - first) * stride + 1, stride), slice(first, last + 1)


class _DepthwiseConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: tuple[int, ...], padding: tuple[int, ...]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad = grad.contiguous(memory_format=_CHANNELS_LAST)
        if stride[0] != 1 or stride[1] != stride[2]:  # not a MoViNet conv: PyTorch's own backward
            grad_x, grad_w, _ = _pytorch_grads(grad, x, weight, stride, padding, [*ctx.needs_input_grad[:2], False])
            return grad_x, grad_w, None, None
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(grad, weight, x.shape, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = _pytorch_grads(grad, x, weight, stride, padding, [False, True, False])[1]
        return grad_x, grad_w, None, None


def _pytorch_grads(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, which: list[bool]):
    """PyTorch's own depthwise-conv gradients (input, weight, bias: ``which`` asks for them), given
    channels-last-3d tensors, on which its kernel's weight gradient is ~3x faster."""
    return torch.ops.aten.convolution_backward(
        grad,
        x.contiguous(memory_format=_CHANNELS_LAST),
        weight.contiguous(memory_format=_CHANNELS_LAST),
        None,
        list(stride),
        list(padding),
        [1, 1, 1],
        False,
        [0, 0, 0],
        weight.shape[0],
        which,
    )
