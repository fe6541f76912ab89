"""The temporal ensemble's members: their configs and where they live.

With the base clip of T frames ``s`` apart and ``n = len(ensemble.offsets)`` members, member ``k``
trains on clips of T/n frames ``n*s`` apart starting ``offsets[k]*s`` frames in: the same duration
as the base clip, on alternating frames, so the members see disjoint frames and together cost one
base model. Training: ``movinet.training.ensemble_training``; evaluation:
``movinet.training.ensemble_evaluation``.

Layout: ``models/<name>/members/m<offset>/`` (each a normal training output) and
``models/<name>/{ensemble.json, config.yaml, run.json}`` written by the evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path

from movinet.config import Config


def ensemble_dir(cfg: Config, root: Path) -> Path:
    return root / "models" / cfg.ensemble.name


def member_dir(cfg: Config, root: Path, offset: int) -> Path:
    return ensemble_dir(cfg, root) / "members" / f"m{offset}"


def member_config(cfg: Config, offset: int) -> Config:
    """The base config turned into member ``offset``'s: fewer frames, a larger stride, an offset."""
    offsets = list(cfg.ensemble.offsets)
    if offset not in offsets:
        raise ValueError(f"offset {offset} is not one of ensemble.offsets {offsets}")
    n, frames = len(offsets), cfg.frames_per_clip
    if frames % n:
        raise ValueError(f"{frames} frames per clip do not split into {n} members (ensemble.offsets)")
    member = copy.deepcopy(cfg)
    clips = member.data.clips
    clips.num_frames = frames // n
    if member.model.frames:
        member.model.frames = frames // n
    clips.offset += offset * clips.frame_stride
    clips.frame_stride *= n
    member.train.name = f"{cfg.ensemble.name}_m{offset}"
    return member
