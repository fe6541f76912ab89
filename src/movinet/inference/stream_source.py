"""A camera-like source: frames decoded one by one from a file or a pipe (PyAV), optionally paced
at the source's own frame rate, fed to a ``StreamSession``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import numpy as np


def av_frames(source: str) -> tuple[float, Iterator[np.ndarray]]:
    """(fps, uint8 RGB frames) of a video file, or of a container stream on stdin for ``-``."""
    import av

    try:
        container = av.open(sys.stdin.buffer if source == "-" else source)
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"{'stdin' if source == '-' else source}: cannot open video ({exc})") from None
    if not container.streams.video:
        raise ValueError(f"{source}: no video stream")
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    return fps, frames()


def paced(frames: Iterator[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """Release each frame no earlier than its time at ``fps`` (as a camera would deliver it)."""
    start = time.monotonic()
    for i, frame in enumerate(frames):
        delay = start + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame
