"""The inference fast path: the same function as the trained model, fewer and faster ops.

``optimize_for_inference``: BatchNorm is folded into the preceding conv, activations run in place,
and tensors use the channels-last-3d layout that oneDNN's 3-D convolutions are fastest with. Call
it under ``torch.inference_mode()``. The result is a copy; the trainable model is left as it was.

``TracedStream``: for frame-by-frame streaming, where Python's per-op overhead dominates small
frames, the stream step is additionally traced and frozen with TorchScript for one input shape.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from movinet.models.layers import ConvBN
from movinet.models.movinet import MoViNet, State


def optimize_for_inference(model: MoViNet) -> MoViNet:
    fast = copy.deepcopy(model).eval()
    for module in fast.modules():
        if isinstance(module, ConvBN):
            module.fuse_()
        if isinstance(module, (nn.SiLU, nn.Hardswish)):
            module.inplace = True
    fast = fast.to(memory_format=torch.channels_last_3d)
    fast.channels_last = True
    for param in fast.parameters():
        param.requires_grad_(False)
    return fast


class StreamStep(nn.Module):
    """``(frames, *state tensors) -> (logits, *next state tensors)``: the stream step with the
    state flattened in a fixed order, the form that tracing and ONNX export need."""

    def __init__(self, model: MoViNet, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, frames: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new_state = self.model(frames, dict(zip(self.names, state)))
        return (logits, *[new_state[name] for name in self.names])


class TracedStream:
    """A stream model's step, fast-pathed, traced and frozen for ``(batch, 3, frames, H, W)`` inputs.

    ``state = traced.init_state()`` then ``logits, state = traced(frames, state)``: the same
    contract as the model, at a fraction of the per-call overhead.
    """

    def __init__(
        self,
        model: MoViNet,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 1,
        frames_per_step: int = 1,
    ) -> None:
        size = image_size if image_size is not None else model.spec.resolution
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.input_shape = (batch_size, 3, frames_per_step, *self.image_size)
        self._fast = optimize_for_inference(model)
        self.device = next(model.parameters()).device
        state = self.init_state()
        self.names = list(state)
        example = torch.zeros(self.input_shape, device=self.device).contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shape checks become constants: shapes are fixed here
            traced = torch.jit.trace(StreamStep(self._fast, self.names).eval(), (example, *state.values()))
            self._graph = torch.jit.freeze(traced)

    def init_state(self) -> State:
        return self._fast.init_state(self.input_shape[0], self.image_size, self.device)

    def __call__(self, frames: Tensor, state: State) -> tuple[Tensor, State]:
        if tuple(frames.shape) != self.input_shape:
            raise ValueError(f"traced for inputs {self.input_shape}, got {tuple(frames.shape)}")
        frames = frames.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            out = self._graph(frames, *[state[name] for name in self.names])
        return out[0], dict(zip(self.names, out[1:]))
