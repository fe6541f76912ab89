"""Reading videos with decord: listing, probing, frame-rate resampling, resizing.

decord pitfalls handled here: torch is imported before decord (a DataLoader freeze otherwise), and
frames are read with ``get_batch`` of sorted indices (``seek`` jumps to keyframes, not exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (must be imported before decord)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")


def list_videos(root: str | Path) -> dict[str, Path]:
    """Video files under ``root``, keyed by their path relative to it (POSIX), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    found = {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")
    }
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    height: int
    width: int


def open_reader(path: str | Path, width: int = -1, height: int = -1):
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height)


def probe(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size; raises ``ValueError`` naming the file when unreadable."""
    try:
        reader = open_reader(path)
        frames = len(reader)
        if frames == 0:
            raise ValueError("the video has no frames")
        height, width = reader[0].shape[:2]
        return VideoInfo(frames, float(reader.get_avg_fps()), int(height), int(width))
    except ValueError:
        raise
    except Exception as exc:  # decord raises its own DECORDError for corrupt/empty files
        raise ValueError(f"{path}: cannot decode video ({str(exc).splitlines()[0][:200]})") from exc


def resample_indices(frames: int, source_fps: float, fps: float | None) -> np.ndarray:
    """Source frame index of each output frame when resampling ``source_fps`` → ``fps``.

    Output frame j shows the source frame displayed at time j / fps: ``floor(j * source_fps / fps)``.
    Never upsamples (duplicated frames carry no information): ``fps`` above the source keeps all.
    """
    if fps is None or fps <= 0 or fps >= source_fps:
        return np.arange(frames, dtype=np.int64)
    step = source_fps / fps
    count = math.floor((frames - 1) / step + 1e-9) + 1
    return np.minimum(np.floor(np.arange(count) * step + 1e-9).astype(np.int64), frames - 1)


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side`` (aspect kept; never upscales)."""
    if not short_side or min(height, width) <= short_side:
        return height, width
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))
