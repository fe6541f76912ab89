"""The paper's temporal ensemble: members of one arch at a lower frame rate, offset in time.

Each member was trained on every ``stride``-th frame starting at its own offset (0 and 1 for the
usual two members at half the frame rate), so on the same clip the members see disjoint frames;
the ensemble averages their logits (arithmetic mean, before softmax). Its cost equals one model at
the full frame rate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from movinet.models import MoViNet

ENSEMBLE_FILE = "ensemble.json"  # a trained ensemble's folder: member checkpoints, offsets, stride, classes


class TemporalEnsemble(nn.Module):
    def __init__(self, members: list[MoViNet], offsets: list[int], stride: int) -> None:
        super().__init__()
        if len(members) != len(offsets) or not members:
            raise ValueError("give one offset per member")
        if len({m.num_classes for m in members}) != 1:
            raise ValueError("ensemble members must predict the same classes")
        if any(not 0 <= o < stride for o in offsets):
            raise ValueError(f"offsets must lie in [0, {stride}), got {offsets}")
        self.members = nn.ModuleList(members)
        self.offsets = list(offsets)
        self.stride = stride

    def member_logits(self, clip: Tensor) -> list[Tensor]:
        """Each member's logits on its own frames of ``clip`` (B, 3, T, H, W) at the full rate."""
        return [member(clip[:, :, offset :: self.stride]) for member, offset in zip(self.members, self.offsets)]

    def forward(self, clip: Tensor) -> Tensor:
        return torch.stack(self.member_logits(clip)).mean(dim=0)
