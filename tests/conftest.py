"""Shared test helpers. Models get random non-zero ReZero scales and BN statistics, so every path
through a block matters (a freshly built MoViNet has ReZero = 0 and is an identity per block)."""

from __future__ import annotations

import torch

from movinet.models import MoViNet


@torch.no_grad()
def randomize(model: MoViNet, seed: int = 0) -> MoViNet:
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("rezero") or name.endswith("pos_scale"):
            param.copy_(torch.rand((), generator=gen) * 0.5 + 0.5)
        elif name.endswith("bn.weight"):
            param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
        elif name.endswith("bias"):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    return model.eval()
