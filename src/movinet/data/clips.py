"""The clip index: which (video, start) windows become training/evaluation samples, and their labels.

A clip of ``num_frames`` T with ``frame_stride`` s and ``offset`` o starting at cached frame
``start`` covers frames ``start + o, start + o + s, ..., start + o + (T-1)s``. Its label is the
majority label of those frames; its *share* is that label's count over T (unlabelled frames count
against it). A clip is discarded when its share is below ``discard_threshold``, when it has no
labelled frame, or when its majority is ``background`` and background is not a class.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from movinet.config import Config
from movinet.data.labels import BACKGROUND


@dataclass(frozen=True)
class ClipParams:
    num_frames: int
    frame_stride: int = 1
    discard_threshold: float = 0.5
    offset: int = 0
    include_background: bool = False

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_stride < 1 or self.offset < 0:
            raise ValueError(f"invalid clip parameters {self}")
        if not 0.0 <= self.discard_threshold <= 1.0:
            raise ValueError(f"discard_threshold must be in [0, 1], got {self.discard_threshold}")

    @classmethod
    def from_config(cls, cfg: Config) -> ClipParams:
        """``data.clips`` with the model's clip length (``model.frames`` when it fixes one)."""
        clips = cfg.data.clips
        return cls(
            num_frames=cfg.frames_per_clip,
            frame_stride=clips.frame_stride,
            discard_threshold=clips.discard_threshold,
            offset=clips.offset,
            include_background=clips.include_background,
        )

    @property
    def span(self) -> int:
        """Cached frames from a clip's start to its last frame, inclusive."""
        return self.offset + (self.num_frames - 1) * self.frame_stride + 1

    def frame_indices(self, start: int) -> np.ndarray:
        return start + self.offset + self.frame_stride * np.arange(self.num_frames)


@dataclass(frozen=True)
class Clip:
    video: str
    start: int
    label: str
    share: float


def cached_labels(source_index: list[int], source_labels: dict[int, str]) -> list[str | None]:
    """The label of each cached frame: that of the source frame it was resampled from."""
    return [source_labels.get(src) for src in source_index]


def label_clip(frame_labels: list[str | None], params: ClipParams, start: int) -> tuple[str | None, float]:
    labels = [frame_labels[i] for i in params.frame_indices(start)]
    counts = Counter(lab for lab in labels if lab is not None)
    if not counts:
        return None, 0.0
    label = max(sorted(counts), key=lambda lab: counts[lab])
    return label, counts[label] / params.num_frames


def candidate_starts(num_cached: int, params: ClipParams) -> range:
    return range(0, max(0, num_cached - params.span + 1))


def evenly_spaced_starts(num_cached: int, params: ClipParams, count: int) -> list[int]:
    """``count`` fixed starts spread over the video (fewer if the video is short)."""
    last = num_cached - params.span
    if last < 0:
        return []
    if count <= 1 or last == 0:
        return [last // 2]
    return sorted({round(i * last / (count - 1)) for i in range(count)})


def index_clips(
    video: str,
    frame_labels: list[str | None],
    params: ClipParams,
    starts,
) -> list[Clip]:
    clips = []
    for start in starts:
        label, share = label_clip(frame_labels, params, start)
        if label is None or share < params.discard_threshold:
            continue
        if label == BACKGROUND and not params.include_background:
            continue
        clips.append(Clip(video, start, label, share))
    return clips
