"""Shared test helpers. Models get random non-zero ReZero scales and BN statistics, so every path
through a block matters (a freshly built MoViNet has ReZero = 0 and is an identity per block)."""

from __future__ import annotations

from pathlib import Path

import torch

from movinet.models import MoViNet

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(*overrides: str) -> dict:
    """The project's config with ``debug=tiny`` and ``overrides``, composed from conf/ (plain dict)."""
    from movinet.config import compose

    return compose(["debug=tiny", *overrides], root=ROOT)


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


def write_video(path, frames, fps: int, codec: str) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) to a real video file with PyAV."""
    from movinet.data.demo import write_video as _write

    _write(path, frames, fps, codec)


def gray_frames(count: int, height: int = 48, width: int = 64, step: int = 4):
    """Frame i is solid gray ``step * i``: its index survives lossy compression."""
    import numpy as np

    levels = (np.arange(count) * step).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_numbers(clip, step: int = 4):
    """Recover the painted frame indices of a (T, H, W, 3) uint8 clip."""
    import numpy as np

    return np.rint(np.asarray(clip, dtype=np.float64).mean(axis=(1, 2, 3)) / step).astype(int).tolist()
