"""Depthwise 3-D convolution for training on the CPU, with a backward pass built from forward convs.

PyTorch's CPU backward for depthwise ``conv3d`` (``groups == channels``) is 10-20x slower than its
forward: training MoViNet-A0 on the demo's clips spent 42 % of each step in it (docs/benchmarks.md).
The gradients are convolutions themselves, so this module computes them with the fast kernels:

* the input's gradient is the forward depthwise conv of the output's gradient with the kernel
  flipped (a transposed conv; for a strided conv the gradient is first spread out by the stride
  with zeros between, so that the conv itself has stride 1);
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
    """The gradient of a depthwise conv's input: a stride-1 conv of the (spread-out) output gradient
    with the flipped kernel, which is what a transposed conv is."""
    channels, kernel = weight.shape[0], weight.shape[2:]
    flipped = weight.flip(2, 3, 4).contiguous(memory_format=_CHANNELS_LAST)
    if all(s == 1 for s in stride):
        pad = [k - 1 - p for k, p in zip(kernel, padding)]
        return F.conv3d(grad, flipped, None, 1, pad, 1, channels)
    # Spread the gradient out by the stride (zeros between), pad so that the stride-1 conv covers
    # exactly the input: before, k-1-p cells; after, what the strided conv's last window left over.
    before = [k - 1 - p for k, p in zip(kernel, padding)]
    after = [n - 1 - (m - 1) * s + p for n, m, s, p in zip(input_shape[2:], grad.shape[2:], stride, padding)]
    sizes = [b + (m - 1) * s + 1 + a for b, m, s, a in zip(before, grad.shape[2:], stride, after)]
    spread = grad.new_zeros([grad.shape[0], channels, *sizes]).contiguous(memory_format=_CHANNELS_LAST)
    cells = tuple(slice(b, b + (m - 1) * s + 1, s) for b, m, s in zip(before, grad.shape[2:], stride))
    spread[(slice(None), slice(None), *cells)] = grad
    return F.conv3d(spread, flipped, None, 1, 0, 1, channels)


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
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(grad, weight, x.shape, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
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
                [False, True, False],
            )[1]
        return grad_x, grad_w, None, None
