"""MoViNet A0–A5, base and stream: ``build``, ``load_pretrained`` and the Kinetics-600 classes."""

from __future__ import annotations

from movinet.models.fast import TracedStream, optimize_for_inference
from movinet.models.movinet import MoViNet, State
from movinet.models.specs import ARCHS, SPECS, VARIANTS, ModelSpec
from movinet.models.weights import kinetics600_classes, load_pretrained, save_checkpoint

__all__ = [
    "ARCHS",
    "SPECS",
    "VARIANTS",
    "MoViNet",
    "ModelSpec",
    "State",
    "build",
    "kinetics600_classes",
    "load_pretrained",
    "optimize_for_inference",
    "save_checkpoint",
    "TracedStream",
]


def build(arch: str, variant: str = "base", num_classes: int = 600, dropout: float | None = None) -> MoViNet:
    """Build MoViNet-``arch`` (a0..a5), ``variant`` base (non-causal 3-D) or stream (causal (2+1)-D)."""
    key = arch.lower()
    if key not in SPECS:
        raise ValueError(f"unknown MoViNet arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown MoViNet variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return MoViNet(SPECS[key], variant, num_classes, dropout)
