"""The MoViNet network: stem → blocks (from the spec table) → head → classifier.

``model(x)`` classifies a whole clip ``(B, 3, T, H, W)`` in [0, 1]. The stream variant also runs
``logits, state = model(x, state)`` on any number of new frames, starting from
``model.init_state(batch_size)``; the logits after the last frame equal the whole-clip logits.
The state is a flat ``dict[str, Tensor]`` (names like ``b1_l0.buffer``), nothing is hidden in the
modules, so the stream step can be traced, exported and served. Every state tensor has the batch
first, ``frame_count`` included: ``(1,)`` when the clips of a batch started together (what
``init_state`` gives), ``(B,)`` one per clip otherwise, so the states of independent streams stack
along dim 0 into one batch step and split back (``movinet.inference.batching``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from movinet.models.layers import ConvBN, HardSigmoid, MoViNetBlock, same_output_size
from movinet.models.specs import CLASSIFIER_HIDDEN, STOCHASTIC_DEPTH, ModelSpec

State = dict[str, Tensor]


class Classifier(nn.Module):
    """Pooled features → 2048 hidden (swish, dropout) → logits, as the TF classifier head."""

    def __init__(self, features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, CLASSIFIER_HIDDEN)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        self.logits = nn.Linear(CLASSIFIER_HIDDEN, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.dropout(self.act(self.hidden(x))))


class MoViNet(nn.Module):
    def __init__(self, spec: ModelSpec, variant: str, num_classes: int, dropout: float | None = None):
        super().__init__()
        self.spec = spec
        self.variant = variant
        self.causal = variant == "stream"
        act: type[nn.Module] = nn.Hardswish if self.causal else nn.SiLU
        gate: type[nn.Module] = HardSigmoid if self.causal else nn.Sigmoid
        self.stem = ConvBN(3, spec.stem, (1, 3, 3), stride=2, act=act())
        layers = spec.layers()
        self.blocks = nn.ModuleDict(
            {
                layer.name: MoViNetBlock(
                    layer,
                    self.causal,
                    act,
                    gate,
                    pos_encoding=self.causal and spec.positional_encoding,
                    drop_rate=STOCHASTIC_DEPTH * (i + 1) / len(layers),
                )
                for i, layer in enumerate(layers)
            }
        )
        self.head = ConvBN(layers[-1].out, spec.head, act=act())
        self.classifier = Classifier(spec.head, num_classes, spec.dropout[variant] if dropout is None else dropout)
        self.channels_last = False  # set by optimize_for_inference: inputs are converted to it
        self.apply(_init_weights)
        nn.init.normal_(self.classifier.logits.weight, std=0.01)

    @property
    def num_classes(self) -> int:
        return self.classifier.logits.out_features

    def set_bn_momentum(self, momentum: float) -> None:
        """BN running-statistics momentum (PyTorch convention). The default 0.01 is TF's 0.99 for
        long training; short fine-tuning runs need faster statistics (e.g. 0.1) or eval drifts."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.momentum = momentum

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer (new head for fine-tuning on the user's classes)."""
        old = self.classifier.logits
        self.classifier.logits = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        nn.init.normal_(self.classifier.logits.weight, std=0.01)
        nn.init.zeros_(self.classifier.logits.bias)

    def init_state(
        self,
        batch_size: int,
        image_size: int | tuple[int, int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> State:
        """Zero stream state for clips of ``image_size`` (default: the model's own resolution)."""
        if not self.causal:
            raise self._cannot_stream()
        size = image_size if image_size is not None else self.spec.resolution
        h, w = (size, size) if isinstance(size, int) else size
        h, w = same_output_size(h, 2), same_output_size(w, 2)  # after the stem
        # Counters and running sums are float32 in every precision (exact up to 2^24 frames); the
        # temporal buffers take ``dtype``.
        state: State = {"frame_count": torch.zeros(1, device=device, dtype=torch.float32)}
        for name, block in self.blocks.items():
            for key, value in block.init_state(batch_size, h, w, device, dtype).items():
                state[f"{name}.{key}"] = value
            h, w = same_output_size(h, block.feature.stride), same_output_size(w, block.feature.stride)
        state["head.sum"] = torch.zeros(batch_size, self.spec.head, device=device, dtype=torch.float32)
        if self.channels_last:
            state = {
                k: v.contiguous(memory_format=torch.channels_last_3d) if v.dim() == 5 else v for k, v in state.items()
            }
        return state

    def forward(self, x: Tensor, state: State | None = None) -> Tensor | tuple[Tensor, State]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if state is None:
            if not self.causal:
                return self._run(x, None)[0]
            return self._run(x, self.init_state(x.shape[0], tuple(x.shape[-2:]), x.device, x.dtype))[0]
        if not self.causal:
            raise self._cannot_stream()
        return self._run(x, state)

    def _cannot_stream(self) -> ValueError:
        return ValueError(
            f"MoViNet-{self.spec.arch.upper()} base is not causal and cannot stream; build it with variant='stream'"
        )

    def _run(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        new_state: State = {}
        frame_count = state["frame_count"] if state is not None else None
        x = self.stem(x)
        for name, block in self.blocks.items():
            block_state = None
            if state is not None:
                block_state = {"se_sum": state[f"{name}.se_sum"]}
                if block.temporal is not None:
                    block_state["buffer"] = state[f"{name}.buffer"]
            x, block_new = block(x, block_state, frame_count)
            for key, value in block_new.items():
                new_state[f"{name}.{key}"] = value
        x = self.head(x)
        if state is None:
            pooled = x.mean(dim=(2, 3, 4))
        else:
            # The head pool is a running mean over every frame seen so far: after the last frame
            # it is the mean over the whole video, the same as the non-streaming pool.
            assert frame_count is not None
            total = state["head.sum"] + x.float().mean(dim=(3, 4)).sum(dim=2)
            new_frames = frame_count + x.shape[2]
            pooled = (total / new_frames[:, None]).to(x.dtype)  # a (1,) or per-clip (B,) counter
            new_state["head.sum"] = total
            new_state["frame_count"] = new_frames
        return self.classifier(pooled), new_state


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv3d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm3d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(module.bias)
