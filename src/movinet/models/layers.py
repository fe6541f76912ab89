"""The pieces of a MoViNet: TF-"same" padded conv+BN units, squeeze-excitation, and the one block.

Everything works on 5-D tensors ``(B, C, T, H, W)`` with ``nn.Conv3d`` so that one implementation
serves both variants:

* ``base``: non-causal 3-D depthwise convs, swish, sigmoid SE gate, SE over the whole clip.
* ``stream``: causal (2+1)-D convs (spatial depthwise, BN, act, then a temporal depthwise conv
  with its own BN and act), hard-swish, gate ``clamp(0.2x + 0.5)``, SE "2plus3d" (cumulative mean
  over past frames concatenated with the frame mean), optional sinusoidal positional encoding.

Streaming state never lives in a module: a block takes its state dict and returns the new one,
so the model can be exported with the state as explicit inputs and outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movinet.models.depthwise import applies, depthwise_conv3d
from movinet.models.specs import Kernel, LayerSpec

BN_EPS = 1e-3  # TF default; the published weights were trained with it
BN_MOMENTUM = 0.01  # TF momentum 0.99 in PyTorch's convention


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding: the extra cell goes after (bottom/right), which matters for stride 2."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def same_output_size(size: int, stride: int) -> int:
    return -(-size // stride)


def pad_same(x: Tensor, kernel_hw: tuple[int, int], stride: int) -> Tensor:
    top, bottom = same_padding(x.shape[-2], kernel_hw[0], stride)
    left, right = same_padding(x.shape[-1], kernel_hw[1], stride)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x


class HardSigmoid(nn.Module):
    """The stream SE gate ``clamp(0.2x + 0.5, 0, 1)`` (Keras 2 hard_sigmoid, what the weights use)."""

    def forward(self, x: Tensor) -> Tensor:
        return (0.2 * x + 0.5).clamp(0.0, 1.0)


class ConvBN(nn.Module):
    """Conv3d with TF "same" spatial padding, then BatchNorm (eps 1e-3), then an activation.

    ``temporal_padding`` pads time symmetrically (non-causal convs); causal convs get their past
    frames from a stream buffer instead. ``fuse_()`` folds the BN into the conv for inference.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Kernel = (1, 1, 1),
        stride: int = 1,
        groups: int = 1,
        act: nn.Module | None = None,
        temporal_padding: int = 0,
    ) -> None:
        super().__init__()
        # With stride 1 and odd kernels TF "same" padding is symmetric: let the conv do it (no
        # padded copy of the input). Strided convs pad asymmetrically in forward().
        self.pad_in_forward = stride > 1
        spatial = (0, 0) if self.pad_in_forward else ((kernel[1] - 1) // 2, (kernel[2] - 1) // 2)
        self.conv = nn.Conv3d(
            cin,
            cout,
            kernel,
            stride=(1, stride, stride),
            padding=(temporal_padding, *spatial),
            groups=groups,
            bias=False,
        )
        self.bn: nn.Module = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = act if act is not None else nn.Identity()
        self.kernel_hw = (kernel[1], kernel[2])
        self.stride = stride

        self.pointwise = kernel == (1, 1, 1) and stride == 1 and groups == 1
        self.depthwise = groups > 1 and groups == cin == cout

    def forward(self, x: Tensor) -> Tensor:
        if self.pointwise:
            # A 1x1x1 conv is a matrix product over channels. PyTorch sends small-batch 1x1 convs
            # to its slow im2col path; on a channels-last tensor the permute is free.
            conv = self.conv
            y = F.linear(x.permute(0, 2, 3, 4, 1), conv.weight.flatten(1), conv.bias)
            return self.act(self.bn(y.permute(0, 4, 1, 2, 3)))
        if self.pad_in_forward:
            x = pad_same(x, self.kernel_hw, self.stride)
        conv = self.conv
        if self.depthwise and conv.bias is None and applies(x, conv.weight):
            # Training on the CPU: PyTorch's depthwise backward is slow there (models/depthwise.py).
            # (Only a BN-folded conv has a bias, and those are for inference.)
            return self.act(self.bn(depthwise_conv3d(x, conv.weight, conv.stride, conv.padding)))
        return self.act(self.bn(conv(x)))

    @torch.no_grad()
    def fuse_(self) -> None:
        """Fold the (eval-mode) BatchNorm into the conv weights: one op instead of two."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm3d):
            return
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = self.conv
        fused = nn.Conv3d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            groups=conv.groups,
            bias=True,
        ).to(conv.weight.device, conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv = fused
        self.bn = nn.Identity()


def positional_encoding(positions: Tensor, channels: int) -> Tensor:
    """Sinusoid over absolute frame positions ``(N, T)`` (N = 1, or one row per clip), shape ``(N, T, channels)``.

    Channel i uses the angle ``p / 10000^(2*floor(i/2)/channels)``; the output is the sines of the
    even channels followed by the cosines of the odd channels (TF ``nn_layers.PositionalEncoding``).
    """
    i = torch.arange(channels, device=positions.device, dtype=positions.dtype)
    inv_freq = torch.pow(10000.0, -(2 * torch.div(i, 2, rounding_mode="floor")) / channels)
    angles = positions[..., None] * inv_freq  # (N, T, C)
    return torch.cat([torch.sin(angles[..., 0::2]), torch.cos(angles[..., 1::2])], dim=-1)


class SqueezeExcite(nn.Module):
    """SE with the pooling each variant needs.

    Non-causal: one global mean over (T, H, W) gates every frame alike.
    Causal ("2plus3d"): frame t sees ``concat(mean of frames 0..t, mean of frame t)``; the running
    sum of frame means is the state ``se_sum``, so chunked streaming equals the whole clip.
    """

    def __init__(
        self,
        channels: int,
        causal: bool,
        act: type[nn.Module],
        gate: type[nn.Module],
        pos_encoding: bool,
    ) -> None:
        super().__init__()
        cin = 2 * channels if causal else channels
        hidden = make_divisible(0.25 * cin)
        self.causal = causal
        self.reduce = nn.Linear(cin, hidden)
        self.act = act()
        self.expand = nn.Linear(hidden, channels)
        self.gate = gate()
        self.pos_scale = nn.Parameter(torch.zeros(())) if pos_encoding else None

    def forward(self, x: Tensor, se_sum: Tensor | None, frame_count: Tensor | None) -> tuple[Tensor, Tensor | None]:
        # Pooled vectors are (B, T, C) so the 1x1x1 convs of the spec run as matrix products.
        if not self.causal:
            pooled, new_sum = x.mean(dim=(2, 3, 4)).unsqueeze(1), None
        else:
            assert se_sum is not None and frame_count is not None
            frame_mean = x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, E)
            # Sums and positions stay float32 (the state's accumulators) whatever the activations' dtype:
            # in bf16 a running sum would stop growing after a few hundred frames.
            running = frame_mean.float().cumsum(dim=1) + se_sum
            # frame_count is (1,) for clips that started together or (B,) per clip (batched streams
            # that started at different times): positions (1 or B, T).
            positions = frame_count[:, None] + torch.arange(x.shape[2], device=x.device, dtype=frame_count.dtype)
            pooled = torch.cat([running / (positions + 1)[..., None], frame_mean.float()], dim=2)
            if self.pos_scale is not None:
                pooled = pooled + self.pos_scale * positional_encoding(positions, pooled.shape[2])
            pooled = pooled.to(x.dtype)
            new_sum = running[:, -1:]
        scale = self.gate(self.expand(self.act(self.reduce(pooled))))  # (B, T or 1, E)
        return x * scale.transpose(1, 2)[..., None, None], new_sum


class Skip(nn.Module):
    """Shortcut when the shape changes: [TF "same" avg-pool that ignores padding] → 1×1×1 conv+BN."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.proj = ConvBN(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # TF "same" average pooling never counts padded cells. Its padding is (before, after)
            # = (0, 1) on an even side and (1, 1) on an odd one: pad `before` inside avg_pool and
            # let ceil_mode supply the cell after, both excluded from the divisor.
            (top, bottom), (left, right) = (
                same_padding(x.shape[-2], 3, self.stride),
                same_padding(x.shape[-1], 3, self.stride),
            )
            kernel, stride = (1, 3, 3), (1, self.stride, self.stride)
            if min(x.shape[-2:]) >= 3:
                x = F.avg_pool3d(x, kernel, stride, padding=(0, top, left), ceil_mode=True, count_include_pad=False)
            else:  # avg_pool refuses inputs smaller than its kernel: divide by the real cells
                padding = (left, right, top, bottom)
                ones = F.pad(torch.ones_like(x[:1, :1, :1]), padding)
                x = F.avg_pool3d(F.pad(x, padding), kernel, stride) / F.avg_pool3d(ones, kernel, stride)
        return self.proj(x)


class MoViNetBlock(nn.Module):
    """One MoViNet layer: expand → depthwise feature conv → SE → project, ×ReZero, + skip.

    State (stream variant only): ``buffer``, the last ``kt-1`` frames entering the causal temporal
    conv (absent for kt == 1), and ``se_sum``, the running sum of frame means for the SE.
    """

    def __init__(
        self,
        spec: LayerSpec,
        causal: bool,
        act: type[nn.Module],
        gate: type[nn.Module],
        pos_encoding: bool,
        drop_rate: float,
    ) -> None:
        super().__init__()
        e = spec.expand
        kt, kh, kw = spec.kernel
        self.causal = causal
        self.buffer_frames = kt - 1 if causal else 0
        self.expand = ConvBN(spec.cin, e, act=act())
        if causal:
            self.feature = ConvBN(e, e, (1, kh, kw), spec.stride, groups=e, act=act())
            self.temporal = ConvBN(e, e, (kt, 1, 1), groups=e, act=act()) if kt > 1 else None
        else:
            self.feature = ConvBN(e, e, spec.kernel, spec.stride, groups=e, act=act(), temporal_padding=(kt - 1) // 2)
            self.temporal = None
        self.se = SqueezeExcite(e, causal, act, gate, pos_encoding)
        self.project = ConvBN(e, spec.out)
        needs_skip = spec.cin != spec.out or spec.stride != 1
        self.skip = Skip(spec.cin, spec.out, spec.stride) if needs_skip else None
        self.rezero = nn.Parameter(torch.zeros(()))
        self.drop_rate = drop_rate

    def forward(
        self, x: Tensor, state: dict[str, Tensor] | None, frame_count: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        new_state: dict[str, Tensor] = {}
        shortcut = x if self.skip is None else self.skip(x)
        x = self.feature(self.expand(x))
        if self.temporal is not None:
            assert state is not None
            buffer = state["buffer"]
            if buffer.shape[0] != x.shape[0] or buffer.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"stream state holds {buffer.shape[0]} clip(s) of {tuple(buffer.shape[-2:])} "
                    f"features, the input gives {x.shape[0]} of {tuple(x.shape[-2:])}: make it with "
                    "model.init_state(batch_size, image_size=(H, W)) for this input"
                )
            full = torch.cat([buffer, x], dim=2)
            new_state["buffer"] = full[:, :, full.shape[2] - self.buffer_frames :]
            x = self.temporal(full)
        x, se_sum = self.se(x, state["se_sum"] if state is not None else None, frame_count)
        if se_sum is not None:
            new_state["se_sum"] = se_sum
        x = self.project(x) * self.rezero
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.rand(x.shape[0], 1, 1, 1, 1, device=x.device, dtype=x.dtype) < keep
            x = x * mask / keep
        return shortcut + x, new_state

    def init_state(
        self, batch: int, height: int, width: int, device: torch.device | None, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        """Zero state for an input of ``height × width`` at this block (before its stride)."""
        # The running SE sum is an accumulator: float32 in every precision (see SqueezeExcite.forward).
        state = {"se_sum": torch.zeros(batch, 1, self.se.expand.out_features, device=device, dtype=torch.float32)}
        if self.temporal is not None:
            h, w = same_output_size(height, self.feature.stride), same_output_size(width, self.feature.stride)
            channels = self.temporal.conv.in_channels
            state["buffer"] = torch.zeros(batch, channels, self.buffer_frames, h, w, device=device, dtype=dtype)
        return state
