"""Classify videos with a trained model or a temporal ensemble: one answer per video, or a timeline.

Per video: the softmax averaged over ``clips_per_video`` evenly spaced clips of ``num_frames``
frames, ``frame_stride`` apart — the clips the evaluation stage scored, so the served model answers
as the evaluated one did.

Timeline (``per_frame=True``): a stream model runs frame by frame with its state, one row per frame
at the model's rate, in constant memory for any length; its last row is the whole video as one
clip. A base model classifies sliding clips (half a clip apart), one row per clip at its last frame.

An ensemble (members at half the rate, offsets 0 and 1) gets the same full-rate clips and splits
them (``TemporalEnsemble``); streaming, each member takes its own frames in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from movinet.data.clips import ClipParams, evenly_spaced_starts
from movinet.inference.ensemble import TemporalEnsemble
from movinet.inference.video_input import Preprocessing, VideoFrames
from movinet.models import MoViNet, optimize_for_inference
from movinet.models.fast import TracedStream
from movinet.models.weights import load_checkpoint


@dataclass
class Prediction:
    video: str
    probabilities: np.ndarray  # (classes,)
    class_names: list[str]
    frames: int  # frames at the cache rate
    fps: float
    timeline: list[dict] = field(default_factory=list)  # {"frame", "time", "probabilities"}

    @property
    def label(self) -> str:
        return self.class_names[int(self.probabilities.argmax())]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]


class Predictor:
    def __init__(self, members: list[MoViNet], class_names: list[str], prep: Preprocessing,
                 offsets: list[int] = (0,), stride: int = 1) -> None:
        if any(m.num_classes != len(class_names) for m in members):
            raise ValueError(f"the model predicts {members[0].num_classes} classes, "
                             f"{len(class_names)} class names given")
        self.members = [m.eval() for m in members]
        self.class_names = list(class_names)
        self.prep = prep
        self.offsets, self.stride = list(offsets), stride
        self.ensemble = TemporalEnsemble([optimize_for_inference(m) for m in members], self.offsets, stride)
        self.streaming = all(m.causal for m in members)
        self._traced: list[TracedStream] | None = None

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], prep: Preprocessing, offsets: list[int] = (0,),
                         stride: int = 1) -> Predictor:
        loaded = [load_checkpoint(p) for p in paths]
        names = {tuple(payload.get("class_names") or ()) for _, payload in loaded}
        if len(names) != 1 or not next(iter(names)):
            raise ValueError("the checkpoints must carry the same class names")
        return cls([m for m, _ in loaded], list(next(iter(names))), prep, offsets, stride)

    @property
    def clip_params(self) -> ClipParams:
        return ClipParams(self.prep.num_frames, self.prep.frame_stride)

    def clip_probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` full-rate clips -> ``(B, classes)`` probabilities."""
        with torch.inference_mode():
            return torch.softmax(self.ensemble(clips), dim=1)

    def _clip_positions(self, start: int, length: int) -> np.ndarray:
        positions = start + self.prep.frame_stride * np.arange(self.prep.num_frames)
        positions = positions[positions < length]
        return positions if len(positions) >= len(self.members) else np.arange(min(length, self.prep.num_frames))

    def predict(self, source, per_frame: bool = False, progress: bool = False, name: str | None = None,
                ) -> Prediction:
        """``source``: a video file, its bytes, or decoded ``(T, H, W, 3)`` uint8 frames."""
        with VideoFrames(source, self.prep, name) as video:
            starts = evenly_spaced_starts(len(video), self.clip_params, self.prep.clips_per_video) or [0]
            clips = torch.stack([video.clip(self._clip_positions(s, len(video))) for s in starts])
            probabilities = self.clip_probabilities(clips).mean(0).numpy()
            fps = getattr(video, "fps", self.prep.fps or 0.0)
            result = Prediction(video.name, probabilities, self.class_names, len(video), fps)
            if per_frame:
                rows = self.stream_timeline(video, progress) if self.streaming else self.clip_timeline(video, progress)
                result.timeline = [{"frame": f, "time": f / fps if fps else None, "probabilities": p}
                                   for f, p in rows]
        return result

    def clip_timeline(self, video: VideoFrames, progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        span = self.prep.span
        hop = max(1, span // 2)
        starts = list(range(0, max(1, len(video) - span + 1), hop))
        for start in _progress(starts, progress, video.name, "clips"):
            positions = self._clip_positions(start, len(video))
            probs = self.clip_probabilities(video.clip(positions)[None])[0].numpy()
            yield int(positions[-1]), probs

    def _stream_models(self, size: int) -> list[TracedStream]:
        if self._traced is None or self._traced[0].image_size != (size, size):
            self._traced = [TracedStream(m, size) for m in self.members]
        return self._traced

    def stream_timeline(self, video: VideoFrames, progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Frame by frame with the stream state: every ``frame_stride``-th frame, each member on its
        own frames (``step % stride == offset``), logits averaged once every member has spoken."""
        models = self._stream_models(self.prep.crop_size)
        states = [m.init_state() for m in models]
        latest: list[torch.Tensor | None] = [None] * len(models)
        step_rate = self.prep.frame_stride
        chunks = video.chunks(step=step_rate)
        total = -(-len(video) // step_rate)
        bar = _progress(None, progress, video.name, "frames", total)
        step = 0
        for first, chunk in chunks:
            for i in range(chunk.shape[1]):
                k = step % self.stride
                for m, (model, offset) in enumerate(zip(models, self.offsets)):
                    if offset == k:
                        latest[m], states[m] = model(chunk[None, :, i : i + 1], states[m])
                if all(x is not None for x in latest):
                    logits = torch.stack(latest).mean(0)
                    yield first + i * step_rate, torch.softmax(logits, dim=1)[0].numpy()
                step += 1
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()


def _progress(items, enabled: bool, name: str, unit: str, total: int | None = None):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total if items is None else len(items), desc=Path(name).name, unit=f" {unit}",
                leave=False)
