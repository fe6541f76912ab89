"""Which torch device inference runs on: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto``.

A request for a GPU that is not there is an error that says so, rather than a silent CPU run.
"""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """``auto``: the first CUDA GPU when one is visible, else the CPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # ValueError-like RuntimeError for a malformed name
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is visible to torch here; use --device cpu (or auto)")
    return device
