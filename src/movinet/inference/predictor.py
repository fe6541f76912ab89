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

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from movinet.data.clips import ClipParams, evenly_spaced_starts
from movinet.inference.batching import StreamBatcher
from movinet.inference.ensemble import TemporalEnsemble
from movinet.inference.video_input import Preprocessing, VideoFrames, frame_batch, prepare_frames
from movinet.models import MoViNet, optimize_for_inference
from movinet.models.device import resolve_device
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
        return top_classes(self.probabilities, self.class_names, k)


def top_classes(probabilities: np.ndarray, class_names: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely classes, best first (ties in class order)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]


class Predictor:
    def __init__(
        self,
        members: list[MoViNet],
        class_names: list[str],
        prep: Preprocessing,
        offsets: list[int] = (0,),
        stride: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if any(m.num_classes != len(class_names) for m in members):
            raise ValueError(
                f"the model predicts {members[0].num_classes} classes, {len(class_names)} class names given"
            )
        self.class_names = list(class_names)
        self.prep = prep
        self.offsets, self.stride = list(offsets), stride
        self.streaming = all(m.causal for m in members)
        self.members = [m.eval() for m in members]
        self.to(device)

    def to(self, device: str | torch.device) -> Predictor:
        """Run on ``device`` (``cpu``, ``cuda``, ``auto``): inputs go there, answers come back to the CPU."""
        self.device = resolve_device(device)
        self.members = [m.to(self.device) for m in self.members]
        self.ensemble = TemporalEnsemble([optimize_for_inference(m) for m in self.members], self.offsets, self.stride)
        self._traced: list[TracedStream] | None = None
        return self

    @classmethod
    def from_checkpoints(
        cls,
        paths: list[str | Path],
        prep: Preprocessing,
        offsets: list[int] = (0,),
        stride: int = 1,
        device: str = "cpu",
    ) -> Predictor:
        loaded = [load_checkpoint(p) for p in paths]
        names = {tuple(payload.get("class_names") or ()) for _, payload in loaded}
        if len(names) != 1 or not next(iter(names)):
            raise ValueError("the checkpoints must carry the same class names")
        return cls([m for m, _ in loaded], list(next(iter(names))), prep, offsets, stride, device)

    @property
    def clip_params(self) -> ClipParams:
        return ClipParams(self.prep.num_frames, self.prep.frame_stride)

    def clip_probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` full-rate clips -> ``(B, classes)`` probabilities."""
        with torch.inference_mode():
            return torch.softmax(self.ensemble(clips.to(self.device)), dim=1).float().cpu()

    def _clip_positions(self, start: int, length: int) -> np.ndarray:
        positions = start + self.prep.frame_stride * np.arange(self.prep.num_frames)
        positions = positions[positions < length]
        return positions if len(positions) >= len(self.members) else np.arange(min(length, self.prep.num_frames))

    def predict(
        self,
        source,
        per_frame: bool = False,
        progress: bool = False,
        name: str | None = None,
    ) -> Prediction:
        """``source``: a video file, its bytes, or decoded ``(T, H, W, 3)`` uint8 frames."""
        with VideoFrames(source, self.prep, name) as video:
            if len(video) < len(self.members):  # each member needs at least one frame of its own
                raise ValueError(
                    f"{video.name}: video too short ({len(video)} frame at the model's rate; "
                    f"the {len(self.members)}-member ensemble needs {len(self.members)})"
                )
            starts = evenly_spaced_starts(len(video), self.clip_params, self.prep.clips_per_video) or [0]
            clips = torch.stack([video.clip(self._clip_positions(s, len(video))) for s in starts])
            probabilities = self.clip_probabilities(clips).mean(0).numpy()
            result = Prediction(video.name, probabilities, self.class_names, len(video), video.fps)
            if per_frame:
                fps = video.fps
                rows = self._timeline(video, progress)
                result.timeline = [{"frame": f, "time": f / fps if fps else None, "probabilities": p} for f, p in rows]
        return result

    def session(self, source_fps: float | None = None, batcher: StreamBatcher | None = None) -> StreamSession:
        """A live stream: push frames as they arrive (at ``source_fps``), read the running answer.
        With ``batcher`` (from ``stream_batcher``) its steps run batched with other sessions'."""
        return StreamSession(self, source_fps, batcher)

    def stream_batcher(
        self, lock: threading.Lock | None = None, max_batch: int = 8, max_wait_ms: float = 3.0
    ) -> StreamBatcher | None:
        """A batcher over this predictor's stream models (the fast-path copies, which take any batch
        size), or None for a base model: its sessions classify whole clips and are not batched."""
        if not self.streaming:
            return None
        size, members = self.prep.crop_size, list(self.ensemble.members)
        single = partial(self._stream_models, size)  # the traced batch-1 steps, for batches of one
        prepare = partial(prepare_frames, prep=self.prep)
        return StreamBatcher(
            members, size, self.device, lock, max_batch, max_wait_ms, batch_one=single, prepare=prepare
        )

    def _timeline(self, video: VideoFrames, progress: bool) -> Iterator[tuple[int, np.ndarray]]:
        session = self.session()
        step = self.prep.frame_stride if self.streaming else 1  # a stream model never sees the others
        bar = _frame_counter(video.name, len(video)) if progress else None
        for first, chunk in video.chunks(step=step):
            yield from session.push_prepared(chunk, first, step)
            if bar is not None:  # the source frames read so far (the last chunk may end short of a step)
                bar.update(min(first + chunk.shape[1] * step, len(video)) - bar.n)
        if bar is not None:
            bar.close()

    def _stream_models(self, size: int) -> list[TracedStream]:
        if self._traced is None or self._traced[0].image_size != (size, size):
            self._traced = [TracedStream(m, size) for m in self.members]
        return self._traced


class StreamSession:
    """One live stream's state: frames in, running prediction out, constant memory.

    A stream model steps on every ``frame_stride``-th frame, each member on its own frames
    (``step % stride == offset``); the answer is the members' averaged logits once each has seen a
    frame. A base model keeps the last clip span of frames and answers every half span.
    ``push`` takes raw uint8 ``(n, H, W, 3)`` frames at ``source_fps`` (resampled to the model's rate
    as the extraction does); it returns the ``(frame, probabilities)`` rows the frames produced.

    Alone, a stream session steps the traced batch-1 models itself. With a ``batcher`` (the server,
    many sessions at once) each step is a request that the batcher runs together with the other
    sessions' waiting steps; the state stays this session's, and the answers are the same. ``push``
    then hands the batcher raw frames: it prepares them on its thread, with the batch (see
    ``movinet.inference.batching`` for why the sessions' threads should run no torch work).
    """

    def __init__(
        self, predictor: Predictor, source_fps: float | None = None, batcher: StreamBatcher | None = None
    ) -> None:
        self.predictor = predictor
        prep = predictor.prep
        self.keep_every = source_fps / prep.fps if source_fps and prep.fps and source_fps > prep.fps else 1.0
        self.received = self.kept = self.position = self._next_keep = 0
        self.last: tuple[int, np.ndarray] | None = None
        self._batcher = batcher if predictor.streaming else None
        if self._batcher is not None:
            self._states: list = [None] * len(predictor.members)  # the batcher makes zero states on its thread
        elif predictor.streaming:
            self._models = predictor._stream_models(prep.crop_size)
            self._states = [m.init_state() for m in self._models]
        else:
            self._buffer: deque[torch.Tensor] = deque(maxlen=predictor.clip_params.span)
        self._latest: list[torch.Tensor | None] = [None] * len(predictor.members)

    def push(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        frames = frame_batch(frames)
        keep = []
        for frame in frames:
            if self.received == self._next_keep:
                keep.append(frame)
                self.kept += 1
                self._next_keep = int(np.floor(self.kept * self.keep_every + 1e-9))
            self.received += 1
        if not keep:
            return []
        kept = np.stack(keep)
        if self._batcher is not None:
            return self._push(len(kept), lambda i: kept[i : i + 1])  # raw: the batcher prepares them
        chunk = prepare_frames(kept, self.predictor.prep)
        return self._push(len(kept), lambda i: chunk[None, :, i : i + 1])

    def push_prepared(
        self,
        chunk: torch.Tensor,
        first: int | None = None,
        step: int = 1,
    ) -> list[tuple[int, np.ndarray]]:
        """Prepared frames ``(3, n, crop, crop)``; ``first``/``step``: their positions, when only
        every ``step``-th frame is given (a stream model skips the rest anyway)."""
        return self._push(chunk.shape[1], lambda i: chunk[None, :, i : i + 1], first, step)

    def _push(
        self, count: int, frame_at: Callable[[int], torch.Tensor | np.ndarray], first: int | None = None, step: int = 1
    ) -> list[tuple[int, np.ndarray]]:
        """``count`` frames, ``frame_at(i)`` the i-th: prepared ``(1, 3, 1, crop, crop)`` or, batched,
        raw ``(1, H, W, 3)``; taken only for the frames the model runs on."""
        rows = []
        row = self._stream_row if self.predictor.streaming else self._clip_row
        with self._batcher.active() if self._batcher is not None else nullcontext():
            for i in range(count):
                position = self.position if first is None else first + i * step
                self.position = position + 1
                probs = row(position, frame_at, i)
                if probs is not None:
                    rows.append((position, probs))
        if rows:
            self.last = rows[-1]
        return rows

    def _stream_row(self, position: int, frame_at: Callable, i: int) -> np.ndarray | None:
        """Steps the members whose frame this is; the answer once each member has seen a frame."""
        p = self.predictor
        if position % p.prep.frame_stride:
            return None
        k = (position // p.prep.frame_stride) % p.stride
        for m, offset in enumerate(p.offsets):
            if offset == k:
                if self._batcher is not None:
                    self._latest[m], self._states[m] = self._batcher.step(m, frame_at(i), self._states[m])
                else:
                    self._latest[m], self._states[m] = self._models[m](frame_at(i).to(p.device), self._states[m])
        if any(x is None for x in self._latest):
            return None
        return torch.softmax(torch.stack(self._latest).mean(0), dim=1)[0].float().cpu().numpy()

    def _clip_row(self, position: int, frame_at: Callable, i: int) -> np.ndarray | None:
        """Keeps the last clip span; the clip's answer every half span."""
        p = self.predictor
        self._buffer.append(frame_at(i)[0])
        span = p.clip_params.span
        if position < span - 1 or (position - span + 1) % max(1, span // 2):
            return None
        clip = torch.cat(list(self._buffer), dim=1)[:, :: p.prep.frame_stride]
        return p.clip_probabilities(clip[None])[0].numpy()


def _frame_counter(name: str, total: int):
    """A progress bar on stderr counting a video's frames (``predict --per-frame`` on a long video)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=Path(name).name, unit=" frames", leave=False)
