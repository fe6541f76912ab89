"""The inference fast path: the same function as the trained model, fewer and faster ops.

``optimize_for_inference``: BatchNorm is folded into the preceding conv, activations run in place,
and tensors use the channels-last-3d layout that oneDNN's 3-D convolutions are fastest with. Call
it under ``torch.inference_mode()``. The result is a copy; the trainable model is left as it was.
For a CPU model it also keeps freed memory in the process (``keep_freed_memory``).

``TracedStream``: for frame-by-frame streaming, where the fixed cost of each op dominates small
frames, the stream step is compiled for one input shape. On the CPU in float32 that is
``FrameStep``, scripted and frozen with TorchScript; elsewhere (CUDA, other dtypes) the fast model's
own stream step, traced and frozen (``TracedGraphStream``). Both keep the model's state dict.

``FrameStep``: the stream step for one frame on 2-D ops. A stream step sees one frame, so the
model's 3-D ops have a time dimension of 1 and can run as 2-D ops; per frame the step is bound by
the number of ops and their fixed costs more than by arithmetic (A2: 0.22 GMAC in 26 blocks, ~1000
ops in the traced model graph). It rebuilds a BN-folded stream model with fewer and cheaper ops:

* activations stay channels-last ``(B, H, W, C)`` throughout, so each 1×1 conv is one GEMM on a view;
* each block's spatial depthwise conv and causal temporal conv run in one call of our C++ kernel
  (``FeatureStep``, ``movinet.models.native``, built for this CPU on first use): one pass that also
  writes the next buffer. Where the kernel cannot be built (no compiler) or is switched off
  (``MOVINET_NATIVE_KERNELS=0``), the spatial convs are oneDNN 2-D convs with weights pre-packed for
  the fixed input shape and the activation fused, and the temporal conv a chain of multiply-adds
  over the buffered frames (no concatenated stack, no conv call);
* the SE gate's hard-sigmoid is folded into its GEMM's weights, the gate into the project weights
  where they are smaller than the activations; ReZero into the project weights, and every project
  bias into the next layer's bias (see ``Block``).

Its state keeps the model's names, shapes and meaning (``MoViNet.init_state``), so the step is a
drop-in for the model's ``logits, state = model(frame, state)``, and the two can take turns on one
stream. Built for one input shape (batch, image size); float32 on the CPU only (``FrameStep.supports``).
"""

# No ``from __future__ import annotations``: TorchScript reads FrameStep's annotations as objects.
import copy
import ctypes
import ctypes.util
import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movinet.models import native as native_kernels
from movinet.models.layers import (
    ConvBN,
    MoViNetBlock,
    Skip,
    positional_encoding,
    same_output_size,
    same_padding,
)
from movinet.models.movinet import MoViNet, State

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameter numbers
_allocator_kept = False


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse rather than hand it back to the OS: process-wide, once.

    Inference allocates and frees the same large activations on every call. glibc serves blocks over
    its mmap threshold (at most 32 MB) with fresh pages and gives the top of its heap back once more
    than twice that is free, so the next call touches new pages, each a page fault: ~35 000 per A0
    base clip on the 2-vCPU VM, a quarter of the clip's CPU time (docs/benchmarks.md). With large
    blocks from the heap and no trimming the pages stay mapped and are reused; the price is that the
    process's RSS stays at its high-water mark. ``MOVINET_KEEP_FREED_MEMORY=0`` leaves glibc as it is.
    Returns whether the setting is in force (glibc only; elsewhere a no-op).
    """
    global _allocator_kept
    if _allocator_kept or os.environ.get("MOVINET_KEEP_FREED_MEMORY", "1") == "0":
        return _allocator_kept
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # glibc refuses thresholds over its limit (32 MB on older versions): then the limit.
    heap = mallopt(_M_MMAP_THRESHOLD, 1 << 30) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    _allocator_kept = bool(heap) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _allocator_kept


def optimize_for_inference(model: MoViNet) -> MoViNet:
    if next(model.parameters()).device.type == "cpu":
        keep_freed_memory()
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


_mkldnn = torch.ops.mkldnn


def _attr(act: nn.Module) -> str:
    """oneDNN's name for a post-op activation."""
    names = {nn.Hardswish: "hardswish", nn.SiLU: "swish", nn.Identity: "none"}
    if type(act) not in names:
        raise ValueError(f"no fused form for {type(act).__name__}")
    return names[type(act)]


class Linear(nn.Module):
    """``act(x @ W.T + b)``: one GEMM and an in-place activation.

    MKL's GEMM has a few µs of fixed cost per call against ~15 µs for oneDNN's (which builds its
    primitive descriptor on every call), so MKL runs the block GEMMs; a single-row product with a
    large weight (the classifier) is bound by reading the weight and runs faster through oneDNN's
    packed layout, with the activation fused.
    """

    def __init__(self, weight: Tensor, bias: Tensor, rows: int, attr: str = "none") -> None:
        super().__init__()
        weight, bias = weight.detach().contiguous(), bias.detach().contiguous()
        self.packed = rows == 1 and weight.numel() >= 1 << 18
        if self.packed:
            weight = _mkldnn._reorder_linear_weight(weight, rows)
        # Buffers, not plain attributes: scripting keeps buffers as module state (a packed oneDNN
        # weight cannot be a graph constant).
        self.register_buffer("weight", weight, False)
        self.register_buffer("bias", bias, False)
        self.attr = attr

    def forward(self, x: Tensor) -> Tensor:
        if self.packed:
            return _mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [], "")
        y = F.linear(x, self.weight, self.bias)
        if self.attr == "hardswish":
            y = F.hardswish(y, inplace=True)
        elif self.attr == "swish":
            y = F.silu(y, inplace=True)
        elif self.attr == "hardsigmoid":
            y = F.hardsigmoid(y, inplace=True)
        return y

    def add(self, x: Tensor, other: Tensor) -> Tensor:
        """``other + x @ W.T``: the bias is left to the caller, who folds it into ``other``."""
        return torch.addmm(other, x, self.weight.t())


class Conv(nn.Module):
    """A BN-folded ``ConvBN`` with a ``(1, kh, kw)`` kernel as one oneDNN 2-D conv on channels-last
    ``(B, H, W, C)`` input, TF-"same" padding (asymmetric ones by an explicit pad), activation fused."""

    def __init__(self, unit: ConvBN, batch: int, height: int, width: int) -> None:
        super().__init__()
        conv = unit.conv
        kh, kw = conv.kernel_size[1:]
        self.stride = conv.stride[1]
        top, bottom = same_padding(height, kh, self.stride)
        left, right = same_padding(width, kw, self.stride)
        symmetric = top == bottom and left == right
        self.pad = [0, 0, 0, 0] if symmetric else [left, right, top, bottom]
        self.padding = [top, left] if symmetric else [0, 0]
        self.explicit_pad = not symmetric
        self.groups = conv.groups
        shape = [batch, conv.in_channels, height + top + bottom, width + left + right]
        if symmetric:
            shape = [batch, conv.in_channels, height, width]
        weight = conv.weight.detach()[:, :, 0].contiguous()
        packed = _mkldnn._reorder_convolution_weight(
            weight, self.padding, [self.stride, self.stride], [1, 1], self.groups, shape
        )
        self.register_buffer("weight", packed, False)
        self.register_buffer("bias", conv.bias.detach().contiguous(), False)
        self.attr = _attr(unit.act)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2)
        if self.explicit_pad:
            x = F.pad(x, self.pad)
        y = _mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, [self.stride, self.stride], [1, 1], self.groups, self.attr, [], ""
        )
        return y.permute(0, 2, 3, 1)


class TemporalConv(nn.Module):
    """The causal ``(kt, 1, 1)`` depthwise conv for one new frame: ``b + Σ w_t · frame_t`` as a chain
    of in-place multiply-adds over the past frames and the new one, then the activation.

    On these small maps the chain (kt + 2 elementwise ops with the buffer update) costs less than
    one oneDNN conv call, whose fixed cost alone is ~30 µs (measured: 28 against 55 µs on 11×11×184).
    """

    def __init__(self, unit: ConvBN) -> None:
        super().__init__()
        conv = unit.conv
        self.kt = conv.kernel_size[0]
        weight = conv.weight.detach()[:, 0, :, 0, 0]  # (C, kt)
        self.register_buffer("taps", weight.t().contiguous(), False)  # (kt, C): broadcasts over (B, H, W, C)
        self.register_buffer("bias", conv.bias.detach().contiguous(), False)
        self.attr = _attr(unit.act)

    def forward(self, buffer: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        """``buffer``: the state's ``(B, C, kt-1, H, W)`` past frames (channels-last-3d, i.e.
        ``(B, kt-1, H, W, C)`` in memory); ``frame``: ``(B, H, W, C)``. Returns the conv's output
        ``(B, H, W, C)`` and the next buffer."""
        past = buffer.permute(0, 2, 3, 4, 1)
        y = torch.addcmul(self.bias, past[:, 0], self.taps[0])
        for t in range(1, self.kt - 1):
            y.addcmul_(past[:, t], self.taps[t])
        y.addcmul_(frame, self.taps[self.kt - 1])
        if self.attr == "hardswish":
            y = F.hardswish(y, inplace=True)
        elif self.attr == "swish":
            y = F.silu(y, inplace=True)
        new_buffer = torch.cat([past[:, 1:], frame.unsqueeze(1)], 1).permute(0, 4, 1, 2, 3)
        return y, new_buffer


class FeatureStep(nn.Module):
    """A block's spatial depthwise conv and causal temporal conv for one frame in one call of our
    kernel (``movinet.models.native``): no pad, no oneDNN call, no multiply-add chain, no
    concatenation; the new frame is written straight into the next buffer. Used where the kernel
    loads and both activations are hard-swish or none (``FeatureStep.applies``)."""

    def __init__(self, block: MoViNetBlock, height: int, width: int) -> None:
        super().__init__()
        conv = block.feature.conv
        kh, kw = conv.kernel_size[1:]
        self.stride = conv.stride[1]
        self.top, self.left = same_padding(height, kh, self.stride)[0], same_padding(width, kw, self.stride)[0]
        self.out_h, self.out_w = same_output_size(height, self.stride), same_output_size(width, self.stride)
        # (E, 1, 1, kh, kw) -> (kh, kw, E): the kernel reads each tap's channels as one vector
        self.register_buffer("weight", conv.weight.detach()[:, 0, 0].permute(1, 2, 0).contiguous(), False)
        self.register_buffer("bias", conv.bias.detach().contiguous(), False)
        self.spatial_act = isinstance(block.feature.act, nn.Hardswish)
        self.temporal = block.temporal is not None
        self.temporal_act = False
        self.register_buffer("taps", torch.zeros(0), False)
        self.register_buffer("tbias", torch.zeros(0), False)
        if block.temporal is not None:
            tconv = block.temporal.conv
            self.taps = tconv.weight.detach()[:, 0, :, 0, 0].t().contiguous()  # (kt, E)
            self.tbias = tconv.bias.detach().contiguous()
            self.temporal_act = isinstance(block.temporal.act, nn.Hardswish)

    @staticmethod
    def applies(block: MoViNetBlock) -> bool:
        """The kernel does hard-swish or no activation, on bias-carrying (BN-folded) convs."""
        units = [block.feature] + ([block.temporal] if block.temporal is not None else [])
        return all(isinstance(u.act, (nn.Hardswish, nn.Identity)) and u.conv.bias is not None for u in units)

    def forward(self, x: Tensor, buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``x``: the expanded frame ``(B, H, W, E)``; ``buffer``: the state's ``(B, E, kt-1, H', W')``
        past frames. Returns the block's features ``(B, H', W', E)`` and the next buffer."""
        past: Tensor | None = None
        taps: Tensor | None = None
        tbias: Tensor | None = None
        if self.temporal and buffer is not None:
            past, taps, tbias = buffer.permute(0, 2, 3, 4, 1).contiguous(), self.taps, self.tbias
        out = torch.ops.movinet.feature_step(
            x, self.weight, self.bias, self.stride, self.top, self.left, self.out_h, self.out_w,
            self.spatial_act, past, taps, tbias, self.temporal_act,
        )  # fmt: skip
        if past is None:
            return out[0], None
        return out[0], out[1].permute(0, 4, 1, 2, 3)


class SkipPath(nn.Module):
    """The shortcut when the shape changes: TF-"same" 3×3 average pool ignoring padding (stride > 1),
    then the 1×1 projection as one GEMM; ``bias`` replaces the projection's (the block folds more into it)."""

    def __init__(self, skip: Skip, batch: int, height: int, width: int, bias: Tensor) -> None:
        super().__init__()
        self.stride = skip.stride
        (top, bottom), (left, right) = same_padding(height, 3, self.stride), same_padding(width, 3, self.stride)
        self.padding = [top, left]
        self.pad = [left, right, top, bottom]
        self.small = self.stride > 1 and min(height, width) < 3
        # avg_pool refuses inputs smaller than its kernel: there, divide by the real cells
        ones = F.pad(torch.ones(1, 1, height, width), self.pad)
        cells = F.avg_pool2d(ones, 3, self.stride) if self.small else torch.ones(())
        self.register_buffer("cells", cells, persistent=False)
        rows = batch * same_output_size(height, self.stride) * same_output_size(width, self.stride)
        conv = skip.proj.conv
        self.proj = Linear(conv.weight.flatten(1), bias, rows)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            image = x.permute(0, 3, 1, 2)
            if self.small:
                image = F.avg_pool2d(F.pad(image, self.pad), 3, self.stride) / self.cells
            else:
                image = F.avg_pool2d(
                    image, 3, self.stride, padding=self.padding, ceil_mode=True, count_include_pad=False
                )
            x = image.permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        return self.proj(x.reshape(b * h * w, c)).view(b, h, w, -1)


class SqueezeExcite(nn.Module):
    """The causal ("2plus3d") SE for one frame: ``concat(running mean, frame mean)`` [+ positional
    encoding] → GEMM → activation → GEMM → the gate ``clamp(0.2 x + 0.5, 0, 1)``, all on ``(B, 1, ·)``
    rows as the state's ``se_sum`` is. ``pe_index`` picks this block's encoding from the ones the
    step computes once per frame (one per channel count, not one per block)."""

    def __init__(self, se: nn.Module, batch: int) -> None:
        super().__init__()
        self.reduce = Linear(se.reduce.weight, se.reduce.bias, batch, _attr(se.act))
        # clamp(0.2 x + 0.5, 0, 1) is hard-sigmoid clamp(y / 6 + 0.5, 0, 1) of y = 1.2 x.
        self.gate = Linear(1.2 * se.expand.weight, 1.2 * se.expand.bias, batch, "hardsigmoid")
        self.channels = se.reduce.in_features
        self.pos_scale = None if se.pos_scale is None else se.pos_scale.detach().clone()
        self.pe_index = -1

    def forward(self, x: Tensor, se_sum: Tensor, denom: Tensor, encodings: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The ``(B, 1, E)`` gate for ``x`` ``(B, H, W, E)`` and the next running sum ``(B, 1, E)``;
        ``denom`` is ``(N, 1, 1)``: frames seen including this one."""
        b, h, w, e = x.shape
        frame_mean = x.view(b, 1, h * w, e).mean(2)
        running = se_sum + frame_mean
        pooled = torch.cat([running / denom, frame_mean], 2)
        if self.pos_scale is not None:
            pooled = pooled + self.pos_scale * encodings[self.pe_index]
        return self.gate(self.reduce(pooled)), running


class Block(nn.Module):
    """One stream ``MoViNetBlock`` for one frame; ``se_index``/``buffer_index`` place its state
    in the flat state list (``buffer_index`` is -1 without a temporal conv).

    Constants fold into the GEMMs: ReZero into the project weights; the project bias is not added
    here but left *pending* on the output (``out_bias``), and the next layer folds the pending bias
    of its input (``in_bias``) into its own biases (a GEMM maps a constant to a constant, the
    padding-free average pool keeps it). The SE gate scales the project weights where they are
    smaller than the activations (one GEMM of ``(B, HW, E) @ (B, E, C)``), else the activations.
    """

    def __init__(
        self, block: MoViNetBlock, batch: int, height: int, width: int, in_bias: Tensor, native: bool = False
    ) -> None:
        super().__init__()
        self.se_index, self.buffer_index = -1, -1
        self.stride = block.feature.conv.stride[1]
        self.batch, self.in_shape = batch, [batch, height, width, -1]
        self.rows_in, self.cin = batch * height * width, block.expand.conv.in_channels
        expand = block.expand.conv
        weight = expand.weight.detach().flatten(1)
        self.expand = Linear(weight, expand.bias + weight @ in_bias, batch * height * width, _attr(block.expand.act))
        # our kernel for the spatial and temporal convs where it applies, else oneDNN and ATen
        self.fused = FeatureStep(block, height, width) if native and FeatureStep.applies(block) else None
        self.feature = None if self.fused is not None else Conv(block.feature, batch, height, width)
        project, rezero = block.project.conv, block.rezero.detach()
        self.out_bias = project.bias.detach() * rezero
        self.skip = None
        if block.skip is not None:
            proj = block.skip.proj.conv
            skip_bias = proj.bias.detach() + proj.weight.detach().flatten(1) @ in_bias + self.out_bias
            self.skip = SkipPath(block.skip, batch, height, width, skip_bias)
            self.out_bias = torch.zeros_like(self.out_bias)
        else:
            self.out_bias = self.out_bias + in_bias
        height, width = same_output_size(height, self.stride), same_output_size(width, self.stride)
        self.cout, self.rows = project.out_channels, height * width
        self.out_shape = [batch, height, width, self.cout]
        self.temporal = None if block.temporal is None or self.fused is not None else TemporalConv(block.temporal)
        self.se = SqueezeExcite(block.se, batch)
        self.register_buffer("project_t", (project.weight.detach().flatten(1) * rezero).t().contiguous(), False)
        self.scale_weights = self.cout < self.rows

    def forward(
        self, x: Tensor, se_sum: Tensor, buffer: Tensor | None, denom: Tensor, encodings: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        shortcut = x if self.skip is None else self.skip(x)
        expanded = self.expand(x.reshape(self.rows_in, self.cin)).view(self.in_shape)
        new_buffer: Tensor | None = None
        if self.fused is not None:
            y, new_buffer = self.fused(expanded, buffer)
        else:
            assert self.feature is not None
            y = self.feature(expanded)
            if self.temporal is not None and buffer is not None:
                y, new_buffer = self.temporal(buffer, y)
        gate, new_sum = self.se(y, se_sum, denom, encodings)
        b = self.batch
        if self.scale_weights:
            weight = self.project_t.unsqueeze(0) * gate.transpose(1, 2)  # (B, E, C)
        else:
            y = y.mul_(gate.unsqueeze(1))
            weight = self.project_t.unsqueeze(0).expand(b, -1, -1)
        out = torch.baddbmm(shortcut.reshape(b, self.rows, self.cout), y.reshape(b, self.rows, -1), weight)
        return out.view(self.out_shape), new_sum, new_buffer


class Head(nn.Module):
    """Head conv (one GEMM, activation fused), the running mean over every frame seen, classifier."""

    def __init__(self, model: MoViNet, batch: int, height: int, width: int, in_bias: Tensor) -> None:
        super().__init__()
        conv, classifier = model.head.conv, model.classifier
        weight = conv.weight.detach().flatten(1)
        self.conv = Linear(weight, conv.bias + weight @ in_bias, batch * height * width, _attr(model.head.act))
        self.hidden = Linear(classifier.hidden.weight, classifier.hidden.bias, batch, _attr(classifier.act))
        self.logits = Linear(classifier.logits.weight, classifier.logits.bias, batch)

    def forward(self, x: Tensor, head_sum: Tensor, denom: Tensor) -> tuple[Tensor, Tensor]:
        b, h, w, c = x.shape
        total = head_sum + self.conv(x.reshape(b * h * w, c)).view(b, h * w, -1).mean(1)
        return self.logits(self.hidden(total / denom)), total


class FrameStep(nn.Module):
    """``(frames (B, 3, 1, H, W), [state tensors in names order]) -> [logits, *next state]`` for a
    BN-folded stream model (``optimize_for_inference``), built for ``batch`` clips of ``image_size``."""

    pe_channels: list[int]  # the SE channel counts with a positional encoding (may be none: typed here)

    def __init__(
        self, model: MoViNet, batch: int, image_size: tuple[int, int], names: list[str], native: bool | None = None
    ) -> None:
        """``native``: use our kernel for the blocks' spatial and temporal convs (``native.load``);
        None: wherever it loads on this machine."""
        super().__init__()
        if not self.supports(model):
            raise ValueError("FrameStep needs a BN-folded float32 stream model on the CPU with oneDNN")
        self.native = native_kernels.available() if native is None else native
        if self.native and not native_kernels.load():
            raise ValueError("FrameStep(native=True): the native kernel is not available on this machine")
        height, width = image_size
        self.stem = Conv(model.stem, batch, height, width)
        height, width = same_output_size(height, 2), same_output_size(width, 2)
        blocks = []
        pending = torch.zeros(model.stem.conv.out_channels)  # the bias each block leaves to the next
        for name, source in model.blocks.items():
            block = Block(source, batch, height, width, pending, self.native)
            pending = block.out_bias
            block.se_index = names.index(f"{name}.se_sum")
            block.buffer_index = names.index(f"{name}.buffer") if source.temporal is not None else -1
            blocks.append(block)
            height, width = same_output_size(height, block.stride), same_output_size(width, block.stride)
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(model, batch, height, width, pending)
        self.count_index, self.head_index = names.index("frame_count"), names.index("head.sum")
        self.pe_channels = sorted({b.se.channels for b in blocks if b.se.pos_scale is not None})
        for block in blocks:
            block.se.pe_index = self.pe_channels.index(block.se.channels) if block.se.pos_scale is not None else -1

    @staticmethod
    def supports(model: MoViNet) -> bool:
        """Whether this step can run ``model``: the oneDNN ops exist only on the CPU, for float32."""
        weight = model.stem.conv.weight
        folded = all(not isinstance(m.bn, nn.BatchNorm3d) for m in model.modules() if isinstance(m, ConvBN))
        return (
            model.causal
            and folded
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
        )

    def forward(self, frames: Tensor, state: list[Tensor]) -> list[Tensor]:
        new_state = list(state)
        count = state[self.count_index]
        denom, positions = (count + 1.0)[:, None], count[:, None]
        encodings = [positional_encoding(positions, c) for c in self.pe_channels]  # each (N, 1, c)
        denom3 = denom[:, :, None]
        x = self.stem(frames[:, :, 0].permute(0, 2, 3, 1).contiguous())
        for block in self.blocks:
            buffer = state[block.buffer_index] if block.buffer_index >= 0 else None
            x, se_sum, new_buffer = block(x, state[block.se_index], buffer, denom3, encodings)
            new_state[block.se_index] = se_sum
            if new_buffer is not None:
                new_state[block.buffer_index] = new_buffer
        logits, new_state[self.head_index] = self.head(x, state[self.head_index], denom)
        new_state[self.count_index] = count + 1.0
        return [logits] + new_state


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


class TracedGraphStream:
    """A stream model's step, fast-pathed, traced and frozen for ``(batch, 3, frames, H, W)`` inputs.

    ``state = traced.init_state()`` then ``logits, state = traced(frames, state)``: the same
    contract as the model, at a fraction of the per-call overhead. Works on any device and dtype;
    ``TracedStream`` uses it where the per-frame CPU step does not apply.
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
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        state = self.init_state()
        self.names = list(state)
        self._compile(state)

    def _compile(self, state: State) -> None:
        example = torch.zeros(self.input_shape, device=self.device, dtype=self.dtype)
        example = example.contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shape checks become constants: shapes are fixed here
            traced = torch.jit.trace(StreamStep(self._fast, self.names).eval(), (example, *state.values()))
            self._graph = torch.jit.freeze(traced)

    def init_state(self) -> State:
        return self._fast.init_state(self.input_shape[0], self.image_size, self.device, self.dtype)

    def _check(self, frames: Tensor) -> None:
        if tuple(frames.shape) != self.input_shape:
            raise ValueError(f"traced for inputs {self.input_shape}, got {tuple(frames.shape)}")

    def __call__(self, frames: Tensor, state: State) -> tuple[Tensor, State]:
        self._check(frames)
        frames = frames.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            out = self._graph(frames, *[state[name] for name in self.names])
        return out[0], dict(zip(self.names, out[1:]))


class TracedStream(TracedGraphStream):
    """The stream step compiled for ``(batch, 3, frames, H, W)`` inputs, by the fastest means there is.

    ``state = traced.init_state()`` then ``logits, state = traced(frames, state)``: the same
    contract and the same state dict as the model. On the CPU in float32 each frame runs the 2-D
    ``FrameStep`` (scripted, frozen; ``frames`` > 1 per call are stepped one by one, which the
    causal model makes identical); elsewhere the traced model graph (``TracedGraphStream``).
    """

    def __init__(
        self,
        model: MoViNet,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 1,
        frames_per_step: int = 1,
        native: bool | None = None,
    ) -> None:
        """``native``: run the blocks' convs in our C++ kernel (``FrameStep``); None: where it loads."""
        self._native = native
        super().__init__(model, image_size, batch_size, frames_per_step)

    def _compile(self, state: State) -> None:
        self._frame_step = FrameStep.supports(self._fast)
        if not self._frame_step:
            super()._compile(state)
            return
        step = FrameStep(self._fast, self.input_shape[0], self.image_size, self.names, self._native).eval()
        with torch.no_grad(), warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.compile, which needs a C++ toolchain at run
            # time and was slower here (docs/benchmarks.md); it still works, so keep its warnings quiet.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._graph = torch.jit.freeze(torch.jit.script(step))

    def __call__(self, frames: Tensor, state: State) -> tuple[Tensor, State]:
        if not self._frame_step:
            return super().__call__(frames, state)
        self._check(frames)
        values = [state[name] for name in self.names]
        # The profiling executor's optimisation passes find nothing to fuse in this graph, and cost
        # a second or more on the first calls of a large model; run the frozen graph as it is.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            for t in range(frames.shape[2]):
                out = self._graph(frames[:, :, t : t + 1], values)
                values = out[1:]
        return out[0], dict(zip(self.names, values))
