"""Export a stream MoViNet's one-step function to ONNX, with the stream state as explicit I/O.

The graph computes ``logits, next_state = step(frames, state)``. Inputs are ``frames``
``(B, 3, T, H, W)`` then one input per state tensor; outputs are ``logits`` then the next value of
each state tensor, in the same order and with the suffix ``.next``. A runtime starts from zeros
(shapes in the graph), feeds each output back as the next input, and reads the logits after the
last frame. The order, arch, image size and class names are stored as model metadata, and so is
the preprocessing (``movinet.inference.video_input.Preprocessing``) that turns a video into the
model's frames, so a ``.onnx`` file streams by itself (``movinet stream SOURCE --model m.onnx``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from movinet.files import atomic_path
from movinet.inference.video_input import Preprocessing
from movinet.models import MoViNet, optimize_for_inference
from movinet.models.fast import StreamStep


def export_stream_onnx(
    model: MoViNet,
    path: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    frames_per_step: int = 1,
    batch_size: int = 1,
    class_names: list[str] | None = None,
    opset: int = 18,
    preprocessing: Preprocessing | None = None,
) -> Path:
    if not model.causal:
        raise ValueError("only the stream variant has a state to export; build variant='stream'")
    size = image_size if image_size is not None else model.spec.resolution
    h, w = (size, size) if isinstance(size, int) else size
    step_model = optimize_for_inference(model)
    step_model.channels_last = False  # layouts mean nothing in ONNX; keep the graph plain
    device = next(model.parameters()).device  # example inputs where the model is (a CUDA model too)
    state = step_model.init_state(batch_size, (h, w), device)
    names = list(state)
    frames = torch.rand(batch_size, 3, frames_per_step, h, w, device=device)
    path = Path(path)
    with atomic_path(path) as tmp:
        # The exporter warns about every torchvision op it cannot register: not ours, silence it.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with torch.no_grad():
            torch.onnx.export(
                StreamStep(step_model, names).eval(),
                (frames, *state.values()),
                str(tmp),
                input_names=["frames", *names],
                output_names=["logits", *[f"{n}.next" for n in names]],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        import onnx

        onnx_model = onnx.load(str(tmp))
        meta = {
            "movinet.arch": model.spec.arch,
            "movinet.variant": model.variant,
            "movinet.image_size": json.dumps([h, w]),
            "movinet.frames_per_step": str(frames_per_step),
            "movinet.state_names": json.dumps(names),
            "movinet.class_names": json.dumps(list(class_names) if class_names else None),
            "movinet.preprocessing": json.dumps(preprocessing.to_dict() if preprocessing else None),
        }
        for key, value in meta.items():
            onnx_model.metadata_props.add(key=key, value=value)
        onnx.save(onnx_model, str(tmp))
    return path


def export_preprocessing(config, image_size: int | tuple[int, int]) -> Preprocessing | None:
    """How a video becomes the exported model's frames: the training run's preprocessing when the
    checkpoint carries its ``config``, else the source's rate with the short side resized to the
    input. An export ``image_size`` other than the run's crop scales the resize with it (the crop
    keeps its share of the frame). None for a non-square input: the center crop is square."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h != w:
        return None
    if not config:
        return Preprocessing(fps=None, size=h, crop_size=h, num_frames=8, frame_stride=1)
    prep = Preprocessing.from_config(config)
    size = round(prep.size * h / prep.crop_size) if prep.size else None
    return dataclasses.replace(prep, size=size, crop_size=h)


class OnnxStream:
    """Runs an exported stream step with onnxruntime, keeping the state between calls.

    ``state = s.init_state()`` then ``logits, state = s(frames, state)`` is ``TracedStream``'s
    contract (so a ``StreamSession`` runs either); ``step`` keeps the state itself."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types: InvalidProtobuf, Fail, ...
            reason = str(exc).splitlines()[0][:200]
            raise ValueError(f"{path}: not an ONNX model onnxruntime can load ({reason})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "movinet.state_names" not in meta:
            raise ValueError(f"{path}: not a movinet stream export (write one with `movinet export onnx`)")
        self.state_names: list[str] = json.loads(meta["movinet.state_names"])
        self.class_names = json.loads(meta.get("movinet.class_names", "null"))
        self.image_size = tuple(json.loads(meta["movinet.image_size"]))
        prep = json.loads(meta.get("movinet.preprocessing", "null"))
        self.preprocessing = Preprocessing(**prep) if prep else None
        self.reset()

    def init_state(self) -> dict:
        """The state before the first frame: zeros of the shapes in the graph."""
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        return {n: np.zeros(shapes[n], dtype=np.float32) for n in self.state_names}

    def reset(self) -> None:
        self.state = self.init_state()

    def __call__(self, frames, state: dict) -> tuple[torch.Tensor, dict]:
        """``(B, 3, T, H, W)`` float32 frames (a tensor or an array) and a state -> (logits, next state)."""
        frames = np.ascontiguousarray(frames.numpy() if isinstance(frames, torch.Tensor) else frames, np.float32)
        outputs = self.session.run(None, {"frames": frames, **state})
        return torch.from_numpy(outputs[0]), dict(zip(self.state_names, outputs[1:]))

    def clip_logits(self, clips) -> torch.Tensor:
        """``(B, 3, T, H, W)`` clips, each streamed from a zero state: the logits after its last frame,
        a stream model's answer for a clip."""
        out = []
        for clip in clips:
            state = self.init_state()
            for t in range(clip.shape[1]):
                logits, state = self(clip[None, :, t : t + 1], state)
            out.append(logits[0])
        return torch.stack(out)

    def step(self, frames):
        """Feed ``(B, 3, T, H, W)`` float32 frames; returns the logits after them."""
        logits, self.state = self(frames, self.state)
        return logits.numpy()
