"""The CPU training path for depthwise convs: same outputs, same gradients as PyTorch's own kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from movinet.models import build
from movinet.models.depthwise import depthwise_conv3d, fast_depthwise_backward
from movinet.models.layers import ConvBN

# (channels, T, H, W, kernel, stride, padding): every kind of depthwise conv MoViNet has (3-D,
# spatial with TF padding done before, temporal only), strided on even and odd sizes, and more.
CASES = [
    (8, 5, 9, 10, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    (8, 6, 8, 8, (5, 3, 3), (1, 1, 1), (2, 1, 1)),
    (8, 5, 9, 10, (5, 3, 3), (1, 2, 2), (2, 0, 0)),
    (8, 5, 10, 12, (5, 3, 3), (1, 2, 2), (2, 0, 0)),
    (8, 6, 11, 11, (1, 5, 5), (1, 2, 2), (0, 0, 0)),
    (8, 4, 7, 7, (3, 1, 1), (1, 1, 1), (0, 0, 0)),
    (8, 4, 8, 8, (3, 3, 3), (1, 2, 2), (1, 1, 1)),
    (8, 3, 7, 7, (1, 1, 1), (1, 2, 2), (0, 0, 0)),  # phases no tap reaches
    (8, 3, 11, 10, (3, 5, 5), (1, 3, 3), (1, 2, 2)),  # stride 3, padded
    (8, 3, 6, 6, (1, 3, 3), (2, 1, 1), (0, 1, 1)),  # not MoViNet's (strided time): PyTorch's backward
]


@pytest.mark.parametrize("channels,t,h,w,kernel,stride,padding", CASES)
def test_outputs_equal_and_gradients_match_pytorch(channels, t, h, w, kernel, stride, padding):
    torch.manual_seed(0)
    x = torch.randn(3, channels, t, h, w, requires_grad=True)
    weight = torch.randn(channels, 1, *kernel, requires_grad=True)
    expected = F.conv3d(x, weight, None, stride, padding, 1, channels)
    got = depthwise_conv3d(x, weight, stride, padding)
    assert torch.equal(got, expected)
    assert got.grad_fn is not None and "DepthwiseConv3d" in type(got.grad_fn).__name__
    grad = torch.randn_like(expected)
    want_x, want_w = torch.autograd.grad(expected, (x, weight), grad)
    got_x, got_w = torch.autograd.grad(got, (x, weight), grad)
    assert got_x.shape == x.shape and got_w.shape == weight.shape
    torch.testing.assert_close(got_x, want_x, rtol=1e-5, atol=1e-5 * want_x.abs().max().item())
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-5 * want_w.abs().max().item())


@pytest.mark.parametrize("needs", ["input", "weight"])
def test_one_gradient_only(needs):
    """A frozen kernel (freeze_backbone) or an input without history: only the other gradient."""
    torch.manual_seed(1)
    x = torch.randn(2, 8, 4, 9, 9, requires_grad=needs == "input")
    weight = torch.randn(8, 1, 3, 3, 3, requires_grad=needs == "weight")
    leaf = x if needs == "input" else weight
    (got,) = torch.autograd.grad(depthwise_conv3d(x, weight, (1, 2, 2), (1, 0, 0)).square().sum(), (leaf,))
    (want,) = torch.autograd.grad(F.conv3d(x, weight, None, (1, 2, 2), (1, 0, 0), 1, 8).square().sum(), (leaf,))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def _backward_names(y: torch.Tensor) -> set[str]:
    names, todo = set(), [y.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            todo.extend(fn for fn, _ in node.next_functions)
    return names


def test_convbn_uses_it_only_where_it_pays():
    """Training on the CPU in float32: yes. Inference, autocast, float64 or switched off: PyTorch's."""
    unit = ConvBN(8, 8, (3, 3, 3), stride=2, groups=8, act=torch.nn.SiLU())
    x = torch.randn(2, 8, 4, 9, 9, requires_grad=True)
    assert "_DepthwiseConv3dBackward" in _backward_names(unit(x))
    with fast_depthwise_backward(False):
        assert "_DepthwiseConv3dBackward" not in _backward_names(unit(x))
    assert "_DepthwiseConv3dBackward" in _backward_names(unit(x))  # the switch is restored
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "_DepthwiseConv3dBackward" not in _backward_names(unit(x))
    assert "_DepthwiseConv3dBackward" not in _backward_names(unit.double()(x.double()))
    with torch.no_grad():
        assert unit.float()(x).grad_fn is None
    pointwise = ConvBN(8, 16)
    assert "_DepthwiseConv3dBackward" not in _backward_names(pointwise(x))


@pytest.mark.parametrize("variant", ["base", "stream"])
def test_a_training_step_matches_pytorch(variant):
    """The whole model (strided, temporal, causal convs): same loss, same gradients as PyTorch's path."""
    torch.manual_seed(2)
    model = build("a0", variant, num_classes=5).train()
    clip, target = torch.randn(2, 3, 6, 40, 40), torch.tensor([1, 4])

    def grads():
        torch.manual_seed(3)  # the same dropout mask
        loss = F.cross_entropy(model(clip), target)
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    loss, got = grads()
    with fast_depthwise_backward(False):
        want_loss, want = grads()
    assert torch.equal(loss, want_loss)
    depthwise = {name for name, m in model.named_modules() if isinstance(m, ConvBN) and m.depthwise}
    assert len(depthwise) >= len(model.blocks) == 15
    for (name, _), g, w in zip(model.named_parameters(), got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item() + 1e-7, msg=name)
