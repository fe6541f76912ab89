"""GPU model speed: A0–A5 base clips at batch 1 and 32 in fp32 and bf16, stream per-frame latency,
and the numerics checks that go with them (issue #15's GPU figures).

    python benchmarks/gpu_model_speed.py [--archs a0 a1 a2 a3 a4 a5] [--batches 1 32]

* base: ``optimize_for_inference`` (BN folded, channels-last-3d), ``cudnn.benchmark``; bf16 is
  autocast. Latency is the median time of one batch; throughput = batch / latency. A batch that does
  not fit in GPU memory is reported as such and halved until it fits.
* numerics: bf16 logits against fp32 (TF32 off), relative L2 error; target <= 1e-2. Stream = clip on
  the GPU in fp32 (TF32 off), and a bf16 stream (weights and buffers bf16, running sums float32)
  against the fp32 clip.
* stream: one frame per call with the state carried; the eager fast path, and the same step
  captured once as a CUDA graph and replayed per frame (the per-frame step is launch-bound).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from movinet.models import SPECS, build, optimize_for_inference
from movinet.models.fast import StreamStep


def timed(fn, min_repeats: int = 3, budget_s: float = 2.0) -> float:
    fn()
    torch.cuda.synchronize()
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < budget_s and len(times) < 20):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def base_row(arch: str, batch: int, bf16: bool) -> tuple[int, float]:
    """(batch that fit, seconds per batch)."""
    spec = SPECS[arch]
    model = optimize_for_inference(build(arch, "base").cuda())
    shape = (3, spec.eval_frames, spec.resolution, spec.resolution)
    while batch >= 1:
        try:
            return batch, _time_batch(model, shape, batch, bf16)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    return 0, float("nan")


def _time_batch(model, shape: tuple, batch: int, bf16: bool) -> float:
    clip = torch.rand(batch, *shape, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        return timed(lambda: model(clip), budget_s=1.5)


def guarded(fn, *args):
    """Run one table row; a failure is printed and the benchmark goes on (device time is scarce)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        print(f"| {fn.__name__}{args} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]} |", flush=True)
        torch.cuda.empty_cache()
        return None


def numerics(arch: str, frames: int) -> dict:
    """bf16 vs fp32 (base, autocast), stream = clip (fp32), bf16 stream vs fp32 clip; TF32 off."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    res = SPECS[arch].resolution
    torch.manual_seed(0)
    clip = torch.rand(1, 3, frames, res, res, device="cuda")
    base = build(arch, "base").cuda().eval()
    stream = build(arch, "stream").cuda().eval()
    with torch.inference_mode():
        ref = base(clip)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = base(clip)
        full = stream(clip)
        state, out = stream.init_state(1, device="cuda"), None
        for t in range(frames):
            out, state = stream(clip[:, :, t : t + 1], state)
        half = stream.to(torch.bfloat16)
        state16 = half.init_state(1, device="cuda", dtype=torch.bfloat16)
        for t in range(frames):
            out16, state16 = half(clip[:, :, t : t + 1].bfloat16(), state16)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    return {"bf16_base": rel(low, ref), "stream_clip": rel(out, full), "bf16_stream": rel(out16, full)}


class GraphedStream:
    """One stream step captured as a CUDA graph: static input and state buffers, replayed per frame."""

    def __init__(self, model, dtype: torch.dtype) -> None:
        res = model.spec.resolution
        state = model.init_state(1, device="cuda", dtype=dtype)
        self.names = list(state)
        self.step = StreamStep(model, self.names)
        self.frame = torch.zeros(1, 3, 1, res, res, device="cuda", dtype=dtype)
        self.state = [state[n].clone() for n in self.names]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self.step(self.frame, *self.state)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.out = self.step(self.frame, *self.state)

    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        self.frame.copy_(frame)
        self.graph.replay()
        for buf, new in zip(self.state, self.out[1:]):
            buf.copy_(new)
        return self.out[0]


def _stream_ms(arch: str, clip: torch.Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """(eager fast path, CUDA graph) milliseconds per frame."""
    frames = clip.shape[2]
    fast = optimize_for_inference(build(arch, "stream").cuda()).to(dtype)
    x = clip.to(dtype)

    def eager():
        state = fast.init_state(1, device="cuda", dtype=dtype)
        for t in range(frames):
            _, state = fast(x[:, :, t : t + 1], state)

    with torch.inference_mode():
        eager_ms = timed(eager) / frames * 1e3
    graphed = GraphedStream(fast, dtype)
    with torch.inference_mode():
        graph_ms = timed(lambda: [graphed(x[:, :, t : t + 1]) for t in range(frames)]) / frames * 1e3
    return eager_ms, graph_ms


def stream_row(arch: str, frames: int) -> dict:
    res = SPECS[arch].resolution
    clip = torch.rand(1, 3, frames, res, res, device="cuda")
    row = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        row[f"eager_{name}"], row[f"graph_{name}"] = _stream_ms(arch, clip, dtype)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["a0", "a1", "a2", "a3", "a4", "a5"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--stream-frames", type=int, default=50)
    parser.add_argument("--check-frames", type=int, default=16)
    parser.add_argument("--sections", nargs="+", default=["numerics", "base", "stream"])
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    print(f"# movinet GPU model speed: torch {torch.__version__}, {torch.cuda.get_device_name()}")

    if "numerics" in args.sections:
        numerics_table(args)
    if "base" in args.sections:
        base_table(args)
    if "stream" in args.sections:
        stream_table(args)


def numerics_table(args) -> None:
    print("\n## Numerics (TF32 off; relative L2 error of the logits)")
    print("| model | bf16 base vs fp32 | stream = clip fp32 | bf16 stream vs fp32 clip |")
    print("|---|---|---|---|")
    for arch in args.archs:
        r = guarded(numerics, arch, args.check_frames)
        if r is None:
            continue
        errors = f"{r['bf16_base']:.2e} | {r['stream_clip']:.2e} | {r['bf16_stream']:.2e}"
        print(f"| {arch.upper()} | {errors} |", flush=True)


def base_table(args) -> None:
    print("\n## Base clips (optimize_for_inference, cudnn.benchmark)")
    print("| model | clip | batch | fp32 ms/batch | fp32 clips/s | bf16 ms/batch | bf16 clips/s |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs:
        spec = SPECS[arch]
        for batch in args.batches:
            r32, r16 = guarded(base_row, arch, batch, False), guarded(base_row, arch, batch, True)
            if r32 is None or r16 is None:
                continue
            (b32, s32), (b16, s16) = r32, r16
            note = "" if b32 == b16 == batch else f" (fits: fp32 {b32}, bf16 {b16})"
            print(
                f"| {arch.upper()} | {spec.eval_frames}x{spec.resolution}^2 | {batch}{note} | {s32 * 1e3:.1f} | "
                f"{b32 / s32:.1f} | {s16 * 1e3:.1f} | {b16 / s16:.1f} |",
                flush=True,
            )
            torch.cuda.empty_cache()


def stream_table(args) -> None:
    print(f"\n## Stream per-frame latency (batch 1, {args.stream_frames} frames, state carried)")
    print("| model | res | eager fp32 ms | eager bf16 ms | CUDA graph fp32 ms | CUDA graph bf16 ms |")
    print("|---|---|---|---|---|---|")
    for arch in args.archs:
        r = guarded(stream_row, arch, args.stream_frames)
        if r is None:
            continue
        print(
            f"| {arch.upper()} stream | {SPECS[arch].resolution} | {r['eager_fp32']:.2f} | {r['eager_bf16']:.2f} | "
            f"{r['graph_fp32']:.2f} | {r['graph_bf16']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
