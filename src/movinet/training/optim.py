"""Optimizers (AdamW, or RMSprop as in the paper) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from movinet.config.schema import OPTIMIZERS, OptimConfig, RMSpropConfig


def optim_config(values: dict) -> OptimConfig:
    """The typed optimizer config from the plain dict a checkpoint's hyperparameters keep."""
    name = values.get("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r} (optim=adamw or optim=rmsprop)")
    return OPTIMIZERS[name](**values)


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if isinstance(cfg, RMSpropConfig):
        return torch.optim.RMSprop(
            params, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r} (optim=adamw or optim=rmsprop)")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    warmup = max(0, min(warmup, total - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_parameters(model: nn.Module, freeze_backbone: bool):
    if not freeze_backbone:
        return [p for p in model.parameters() if p.requires_grad]
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("classifier."))
    return [p for p in model.parameters() if p.requires_grad]
