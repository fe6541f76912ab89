"""Export a stream MoViNet's one-step function to ONNX, with the stream state as explicit I/O.

The graph computes ``logits, next_state = step(frames, state)``. Inputs are ``frames``
``(B, 3, T, H, W)`` then one input per state tensor; outputs are ``logits`` then the next value of
each state tensor, in the same order and with the suffix ``.next``. A runtime starts from zeros
(shapes in the graph), feeds each output back as the next input, and reads the logits after the
last frame. The order, arch, image size and class names are stored as model metadata.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from movinet.files import atomic_path
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
        }
        for key, value in meta.items():
            onnx_model.metadata_props.add(key=key, value=value)
        onnx.save(onnx_model, str(tmp))
    return path


class OnnxStream:
    """Runs an exported stream step with onnxruntime, keeping the state between calls."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.state_names: list[str] = json.loads(meta["movinet.state_names"])
        self.class_names = json.loads(meta.get("movinet.class_names", "null"))
        self.image_size = tuple(json.loads(meta["movinet.image_size"]))
        self.reset()

    def reset(self) -> None:
        import numpy as np

        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.state = {n: np.zeros(shapes[n], dtype=np.float32) for n in self.state_names}

    def step(self, frames):
        """Feed ``(B, 3, T, H, W)`` float32 frames; returns the logits after them."""
        outputs = self.session.run(None, {"frames": frames, **self.state})
        self.state = dict(zip(self.state_names, outputs[1:]))
        return outputs[0]
