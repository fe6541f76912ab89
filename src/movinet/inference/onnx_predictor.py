"""A ``Predictor`` over an exported stream step run by onnxruntime (fp32 or int8), so that
``movinet stream`` and ``movinet predict`` take ``--model m.onnx``.

Only the step differs from the PyTorch model's: the sessions, the frame resampling, the
preprocessing (stored in the export's metadata), the timeline and the printed rows are the
``Predictor``'s own. One model on the CPU, no ensemble; its sessions run unbatched.
"""

from __future__ import annotations

import os

import torch

from movinet.inference.onnx_export import OnnxStream
from movinet.inference.predictor import Predictor


class OnnxPredictor(Predictor):
    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> None:
        # Predictor.__init__ builds PyTorch members; here the one member is the onnxruntime step.
        if str(device) != "cpu":
            raise ValueError(f"{path}: an ONNX model runs on the CPU (onnxruntime), not on --device {device}")
        step = OnnxStream(path, threads)
        if step.preprocessing is None:
            raise ValueError(f"{path}: the export carries no preprocessing; export it again with one --size")
        classes = step.session.get_outputs()[0].shape[-1]
        self.class_names = step.class_names or [str(i) for i in range(classes)]
        self.prep = step.preprocessing
        self.offsets, self.stride, self.streaming = [0], 1, True
        self.members = [step]
        self.device = torch.device("cpu")
        self._traced = [step]

    def to(self, device: str | torch.device) -> OnnxPredictor:
        if str(device) != "cpu":
            raise ValueError(f"an ONNX model runs on the CPU (onnxruntime), not on {device}")
        return self

    def _stream_models(self, size: int) -> list[OnnxStream]:
        if self.members[0].image_size != (size, size):
            raise ValueError(f"the model was exported for {self.members[0].image_size} frames, not {size}x{size}")
        return self._traced

    def stream_batcher(self, *args, **kwargs) -> None:
        """No batcher: the export has batch size 1."""
        return None

    def clip_probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.members[0].clip_logits(clips), dim=1)
