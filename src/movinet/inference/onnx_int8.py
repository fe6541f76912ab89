"""int8 stream steps: an exported stream step (``onnx_export``) quantised statically, calibrated on
the user's own frames.

Why this form (measured on the A0 stream step, see docs/benchmarks.md, "int8"):

- Static, not dynamic. Dynamic quantisation needs no calibration data but quantises activations at
  run time and turns the convs into ``ConvInteger``: the step ran about 2× slower than fp32, and with
  the convs left alone (MatMul only) it gained nothing, the convs being most of the time. So
  ``--int8`` asks for calibration frames.
- QDQ format, int8 weights per output channel, uint8 activations, and only the ops with weights
  (Conv, MatMul, Gemm) quantised; the rest of the graph stays float.
- The stream state stays float. Quantising every op, with ranges calibrated on 8-frame clips, broke
  a 96-frame stream (top-1 agreement with fp32 fell to 10 %): a running sum (the SE and head pools,
  the frame count) grows past the range calibration saw. The ops with weights that read those
  running averages (the SE squeezes, the classifier) are left in float too: they are tiny.
  The frame buffers are quantised where the temporal conv reads them, like any activation:
  requantising a buffered value with the same scale gives it back exactly, so no error builds up
  over a stream.
- Calibration feeds each clip frame by frame through the fp32 step, carrying the state, so the
  ranges are those of a real stream (the state inputs included), not of zero states.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from movinet.files import atomic_path
from movinet.inference.onnx_export import OnnxStream
from movinet.inference.video_input import Preprocessing, VideoFrames

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
CALIBRATION_FRAMES = 256  # in all: enough for stable min/max ranges, a few seconds of work for A0
MIN_FRAMES_PER_VIDEO = 16  # so each calibration stream runs long enough for its state to build up


def calibration_videos(source: str | os.PathLike) -> list[Path]:
    """The videos of ``source`` (a video file or a folder of them), each probed now: a bad one is
    named before the export's work begins, not after."""
    from movinet.data.video import list_videos, probe

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such video file or folder")
    videos = list(list_videos(path).values()) if path.is_dir() else [path]
    if not videos:
        raise ValueError(f"{source}: no video files in this folder")
    for video in videos:
        probe(video)  # ValueError naming the file
    return videos


def calibration_clips(
    videos: list[Path], prep: Preprocessing, max_frames: int = CALIBRATION_FRAMES
) -> Iterator[torch.Tensor]:
    """``(3, n, crop, crop)`` clips decoded and prepared as the model will see them (``VideoFrames``),
    only the frames a stream model steps on (every ``frame_stride``-th), ``max_frames`` in all,
    shared among the videos from the first on."""
    per_video = max(-(-max_frames // len(videos)), MIN_FRAMES_PER_VIDEO)
    left = max_frames
    for video in videos:
        if left <= 0:
            return
        with VideoFrames(video, prep) as frames:
            positions = np.arange(0, len(frames), prep.frame_stride)[: min(per_video, left)]
            left -= len(positions)
            yield frames.clip(positions)


def quantize_stream_onnx(
    fp32_path: str | os.PathLike, path: str | os.PathLike, clips: Iterable[torch.Tensor | np.ndarray]
) -> Path:
    """Write the int8 form of the exported stream step ``fp32_path`` to ``path`` (atomically),
    calibrated on ``clips`` (``(3, T, H, W)`` float frames at the export's size)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    stream = OnnxStream(fp32_path)
    reader = _StreamCalibration(stream, clips)
    exclude = state_reading_ops(onnx.load(str(fp32_path)), stream.state_names)
    path = Path(path)
    with atomic_path(path) as tmp:
        quantize_static(
            str(fp32_path),
            str(tmp),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(WEIGHT_OPS),
            nodes_to_exclude=exclude,
        )  # (not CalibMaxIntermediateOutputs: in onnxruntime 1.32 it drops every full chunk's ranges)
        if not reader.frames:
            raise ValueError("no calibration frames (the calibration videos gave none)")
        _add_metadata(tmp, {"movinet.quantization": json.dumps({"int8": "static QDQ", "frames": reader.frames})})
    return path


def state_reading_ops(model, state_names: list[str]) -> list[str]:
    """The MatMul/Gemm nodes that read the state through weightless ops only (the SE squeezes and
    the classifier, which read running averages): left in float. Convs reading the frame buffers
    are not among them (see the module's docstring)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, seen, front = set(), set(), list(state_names)
    while front:
        for node in consumers.get(front.pop(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHT_OPS:
                if node.op_type != "Conv":
                    found.add(node.name)
            else:
                front += list(node.output)
    return sorted(found)


class _StreamCalibration:
    """An onnxruntime ``CalibrationDataReader`` (it recognises one by ``get_next``): the fp32 step's
    inputs for every calibration frame, each clip streamed from a zero state, the state carried
    from frame to frame."""

    def __init__(self, stream: OnnxStream, clips: Iterable[torch.Tensor | np.ndarray]) -> None:
        self.stream, self.frames = stream, 0
        self._inputs = self._walk(clips)

    def _walk(self, clips) -> Iterator[dict]:
        for clip in clips:
            clip = np.asarray(clip, dtype=np.float32)
            state = self.stream.init_state()
            for t in range(clip.shape[1]):
                frame = np.ascontiguousarray(clip[None, :, t : t + 1])
                yield {"frames": frame, **state}
                self.frames += 1
                _, state = self.stream(frame, state)

    def get_next(self) -> dict | None:
        return next(self._inputs, None)


def _add_metadata(path: Path, values: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
