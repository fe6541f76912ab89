"""A video to classify, prepared exactly as the training data was.

Training reads frames from the extraction cache: decoded by decord at ``fps`` with the short side
resized to ``size`` (decord's own resize), then center-cropped to ``crop_size`` for evaluation.
``Preprocessing`` carries those numbers from the run's config into the served model, and
``VideoFrames`` repeats the same steps on a file, raw bytes (an upload), or frames already decoded.

Frames are decoded on demand (``clip`` for given indices, ``chunks`` for a pass in bounded
batches), so a video of any length is classified in constant memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from movinet.config import Config, to_config
from movinet.data.dataset import center_crop, resize_clip
from movinet.data.video import open_reader, probe, resample_indices, resized_shape

BATCH = 32  # frames per decode call


@dataclass(frozen=True)
class Preprocessing:
    fps: float | None  # frame rate of the cache (None: the source's)
    size: int | None  # short side of the cached frames (None: as decoded)
    crop_size: int  # the model's input (center crop)
    num_frames: int  # frames per clip at the model's rate
    frame_stride: int  # cached frames between a clip's frames
    clips_per_video: int = 4  # evenly spaced clips averaged into a video's prediction

    @classmethod
    def from_config(cls, cfg: Config | Mapping) -> Preprocessing:
        """The preprocessing of the run that trained the model (a ``Config`` or its plain form)."""
        cfg = to_config(cfg)
        data = cfg.data
        return cls(
            fps=data.extract.fps,
            size=data.extract.size or None,
            crop_size=data.transform.crop_size,
            num_frames=cfg.frames_per_clip,
            frame_stride=data.clips.frame_stride,
            clips_per_video=data.clips.eval_clips_per_video,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class VideoFrames:
    """One video's frames after resampling: ``len()`` of them, read as ``(3, T, crop, crop)`` floats."""

    def __init__(
        self, source: str | os.PathLike | bytes | np.ndarray, prep: Preprocessing, name: str | None = None
    ) -> None:
        self.prep = prep
        self._tmp: str | None = None
        self._array: np.ndarray | None = None
        if isinstance(source, np.ndarray):  # decoded frames (T, H, W, 3) uint8, already at the rate
            if source.ndim != 4 or source.shape[-1] != 3 or 0 in source.shape:
                raise ValueError(f"decoded frames must be a non-empty (T, H, W, 3) array, got {source.shape}")
            self.name = name or "frames"
            self.fps = float(prep.fps or 0.0)  # 0.0: a rate nobody gave
            self._array = source
            self.indices = np.arange(len(source))
            return
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ValueError(f"{name or 'upload'}: empty video")
            fd, self._tmp = tempfile.mkstemp(suffix=".video")
            with os.fdopen(fd, "wb") as f:
                f.write(source)
            path = Path(self._tmp)
            self.name = name or "upload"
        else:
            path = Path(source)
            self.name = name or str(path)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such video file")
        try:
            info = probe(path)
            if self._tmp is not None:  # an upload: its frames' size and count are bounded like pushed frames
                check_frame_size(info.height, info.width)
            self.fps = float(prep.fps) if prep.fps and prep.fps < info.fps else info.fps
            height, width = resized_shape(info.height, info.width, prep.size)
            self._reader = open_reader(path, width=width, height=height)
            self.indices = resample_indices(info.frames, info.fps, prep.fps)
            if self._tmp is not None and len(self.indices) > MAX_UPLOAD_FRAMES:
                raise ValueError(
                    f"{path}: {len(self.indices)} frames at the model's rate; uploads hold at most {MAX_UPLOAD_FRAMES}"
                )
        except Exception as exc:  # never leave the upload's temporary file behind; name the upload
            self.close()
            if isinstance(exc, (ValueError, FileNotFoundError)):
                raise ValueError(str(exc).replace(str(path), self.name)) from None
            raise ValueError(f"{self.name}: cannot open video ({str(exc).splitlines()[0][:200]})") from exc

    def __len__(self) -> int:
        return len(self.indices)

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)
        self._tmp = None

    def _decode(self, positions: np.ndarray) -> np.ndarray:
        if self._array is not None:
            return np.asarray(self._array[positions])
        try:
            return self._reader.get_batch(self.indices[positions].tolist()).asnumpy()
        except Exception as exc:  # decord's errors on truncated streams
            raise ValueError(f"{self.name}: decoding failed ({str(exc).splitlines()[0][:200]})") from exc

    def _prepare(self, frames: np.ndarray) -> torch.Tensor:
        return prepare_frames(frames, self.prep, resize=self._array is not None)

    def clip(self, positions) -> torch.Tensor:
        """Frames at the given (sorted) positions as ``(3, T, crop, crop)`` in [0, 1]."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"{self.name}: frame positions outside 0..{len(self) - 1}")
        return self._prepare(self._decode(positions))

    def chunks(self, step: int = 1, batch: int = BATCH) -> Iterator[tuple[int, torch.Tensor]]:
        """Every ``step``-th frame, ``batch`` at a time: ``(position of the first, (3, n, crop, crop))``."""
        positions = np.arange(0, len(self), step)
        for i in range(0, len(positions), batch):
            chunk = positions[i : i + batch]
            yield int(chunk[0]), self.clip(chunk)


MIN_SIDE = 16  # pixels: a thinner frame would be upscaled many times over to reach the crop
MAX_ASPECT = 8.0  # long side over short side
MAX_PIXELS = 4096 * 4096  # per frame
MAX_UPLOAD_FRAMES = 36_000  # frames of an uploaded video at the model's rate (an hour at 10 fps)


def check_frame_size(height: int, width: int) -> None:
    """A pushed frame's size within the documented bounds, checked before any pixel is decoded or
    resized: the cost of a frame follows from its size, whatever its bytes claim."""
    short, long = min(height, width), max(height, width)
    if short < MIN_SIDE or long > MAX_ASPECT * short or height * width > MAX_PIXELS:
        raise ValueError(
            f"a {width}x{height} frame is outside the limits: short side >= {MIN_SIDE} px, aspect ratio <= "
            f"{MAX_ASPECT:g}, at most {MAX_PIXELS} pixels"
        )


def frame_batch(frames) -> np.ndarray:
    """Frames pushed to a stream: one ``(H, W, 3)`` or several ``(n, H, W, 3)``, uint8, of a size
    within ``check_frame_size``'s bounds."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise ValueError(f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
    check_frame_size(*frames.shape[1:3])
    return frames


def prepare_frames(frames: np.ndarray, prep: Preprocessing, resize: bool = True) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, crop, crop)``: the short side to the cache's ``size``
    (``resize``: frames not decoded by decord at that size), then the evaluation center crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)
    if resize and prep.size and min(x.shape[-2:]) > prep.size:
        x = resize_clip(x, resized_shape(x.shape[-2], x.shape[-1], prep.size))  # the extraction's aspect
    return center_crop(x, prep.crop_size).contiguous()


def read_video_arg(value: str, allow_paths: bool = True, max_bytes: int | None = None) -> bytes | str:
    """A ``video`` input value of the video model: a path that exists (when ``allow_paths``), else
    base64 of the file. Behind an HTTP endpoint paths are off: a client must not read, or probe for,
    the server's files. ``max_bytes`` bounds the decoded video, checked before decoding."""
    import base64
    import binascii

    if allow_paths and len(value) < 4096 and os.path.isfile(value):
        return value
    if max_bytes is not None and len(value) * 3 // 4 > max_bytes:
        raise ValueError(f"video larger than {max_bytes / 2**20:g} MB (base64 of {len(value)} characters)")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        what = "a path to an existing file or the base64" if allow_paths else "the base64"
        raise ValueError(f"video must be {what} of a video file") from None
