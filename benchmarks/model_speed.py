"""Model speed on this machine: clip latency, per-frame streaming latency, streaming memory, GMAC/s.

Every figure is printed next to a baseline measured in the same run: the plain eager model (BN as
separate ops, default memory layout) against the inference fast path (``optimize_for_inference``:
BN folded, in-place activations, channels-last-3d, ``torch.inference_mode``), and, for streaming,
onnxruntime on the exported stream step.

    python benchmarks/model_speed.py [--threads 2] [--device cpu|cuda] [--repeats 5]

Targets (2 CPU threads): A0 base clip <= 0.15 s, A0 stream <= 5 ms/frame, A2 stream <= 10 ms/frame,
streaming memory flat (1000 frames <= 1.1x of 50 frames).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from movinet.models import SPECS, TracedStream, build, optimize_for_inference
from movinet.models.layers import ConvBN


def count_macs(model: nn.Module, clip: torch.Tensor) -> int:
    """Multiply-accumulates of the convs and linear layers for one forward pass on ``clip``."""
    total = 0

    def conv_hook(module: ConvBN, _inp, out):
        nonlocal total
        conv = module.conv
        kernel = conv.kernel_size[0] * conv.kernel_size[1] * conv.kernel_size[2]
        total += out.numel() * conv.in_channels // conv.groups * kernel

    def linear_hook(module: nn.Linear, _inp, out):
        nonlocal total
        total += out.numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, ConvBN)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.inference_mode():
        model(clip)
    for handle in handles:
        handle.remove()
    return total


def timed(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clip_latency(arch: str, frames: int, repeats: int, device: str) -> dict:
    res = SPECS[arch].resolution
    model = build(arch, "base").eval().to(device)
    fast = optimize_for_inference(model)
    clip = torch.rand(1, 3, frames, res, res, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    macs = count_macs(model, clip)
    with torch.inference_mode():
        eager = timed(lambda: model(clip), repeats, sync)
        quick = timed(lambda: fast(clip), repeats, sync)
        row = {"eager_s": eager, "fast_s": quick, "gmacs": macs / 1e9}
        if device == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                row["fast_bf16_s"] = timed(lambda: fast(clip), repeats, sync)
    return row


def stream_latency(arch: str, frames: int, device: str) -> dict:
    res = SPECS[arch].resolution
    model = build(arch, "stream").eval().to(device)
    fast = optimize_for_inference(model)
    clip = torch.rand(1, 3, frames, res, res, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    per_frame_macs = count_macs(model, clip[:, :, :1])

    def run(m):
        state = m.init_state(1, res, device=device)
        for t in range(frames):
            _, state = m(clip[:, :, t : t + 1], state)

    traced = TracedStream(model)

    def run_traced():
        state = traced.init_state()
        for t in range(frames):
            _, state = traced(clip[:, :, t : t + 1], state)

    with torch.inference_mode():
        row = {
            "eager_ms": timed(lambda: run(model), 1, sync) / frames * 1e3,
            "fast_ms": timed(lambda: run(fast), 3, sync) / frames * 1e3,
            "traced_ms": timed(run_traced, 3, sync) / frames * 1e3,
            "gmacs_frame": per_frame_macs / 1e9,
        }
    if device == "cpu":
        from movinet.inference.onnx_export import OnnxStream, export_stream_onnx

        with tempfile.TemporaryDirectory() as tmp:
            runtime = OnnxStream(export_stream_onnx(model, Path(tmp) / "m.onnx"), threads=torch.get_num_threads())
            frames_np = [clip[:, :, t : t + 1].numpy() for t in range(frames)]

            def run_ort():
                runtime.reset()
                for frame in frames_np:
                    runtime.step(frame)

            row["onnxruntime_ms"] = timed(run_ort, 3) / frames * 1e3
    return row


_MEMORY_CHILD = """
import resource, sys, torch
from movinet.models import build, optimize_for_inference
torch.set_num_threads({threads})
model = optimize_for_inference(build("{arch}", "stream"))
res = model.spec.resolution
state = model.init_state(1)
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
out = []
with torch.inference_mode():
    for t in range(1, {frames} + 1):
        _, state = model(torch.rand(1, 3, 1, res, res), state)
        if t in (50, {frames}):
            out += [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss_kb()]
print(*out)
"""


def stream_memory(arch: str, frames: int, threads: int) -> dict:
    """Peak RSS after 50 frames and after ``frames`` frames, in one fresh process."""
    code = _MEMORY_CHILD.format(arch=arch, frames=frames, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak50, rss50, peak_n, rss_n = (int(v) / 1024 for v in out.stdout.split())
    return {"peak_50": peak50, "peak_n": peak_n, "rss_50": rss50, "rss_n": rss_n, "ratio": peak_n / peak50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=50, help="clip length for clip and stream timings")
    parser.add_argument("--memory-frames", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# movinet model speed: torch {torch.__version__}, {args.device}, {args.threads} threads, {cpu}")
    if args.device == "cuda":
        print(f"# GPU: {torch.cuda.get_device_name()}")

    print("\n## Base clip latency (1 x 3 x T x res^2)")
    print("| model | clip | GMAC | eager s | fast s | speed-up | fast GMAC/s |")
    print("|---|---|---|---|---|---|---|")
    for arch in ("a0", "a2"):
        r = clip_latency(arch, args.frames, args.repeats, args.device)
        res = SPECS[arch].resolution
        print(
            f"| {arch.upper()} base | {args.frames}x{res}^2 | {r['gmacs']:.2f} | {r['eager_s']:.3f} | "
            f"{r['fast_s']:.3f} | {r['eager_s'] / r['fast_s']:.2f}x | {r['gmacs'] / r['fast_s']:.1f} |"
            + (f" bf16 autocast {r['fast_bf16_s']:.4f} s |" if "fast_bf16_s" in r else "")
        )

    print("\n## Stream per-frame latency (one frame per call, state carried)")
    header = "| model | res | GMAC/frame | eager ms | fast ms | traced ms | speed-up (traced) | traced GMAC/s |"
    print(header + (" onnxruntime ms |" if args.device == "cpu" else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.device == "cpu" else ""))
    for arch in ("a0", "a1", "a2"):
        r = stream_latency(arch, args.frames, args.device)
        line = (
            f"| {arch.upper()} stream | {SPECS[arch].resolution} | {r['gmacs_frame']:.3f} | "
            f"{r['eager_ms']:.2f} | {r['fast_ms']:.2f} | {r['traced_ms']:.2f} | "
            f"{r['eager_ms'] / r['traced_ms']:.2f}x | {r['gmacs_frame'] / r['traced_ms'] * 1e3:.1f} |"
        )
        if "onnxruntime_ms" in r:
            line += f" {r['onnxruntime_ms']:.2f} |"
        print(line, flush=True)

    if args.device == "cpu":
        print("\n## Streaming memory (peak RSS, fast path, one process)")
        n = args.memory_frames
        print(f"| model | peak after 50 frames MB | peak after {n} MB | ratio | RSS after 50 MB | RSS after {n} MB |")
        print("|---|---|---|---|---|---|")
        for arch in ("a0", "a2"):
            r = stream_memory(arch, n, args.threads)
            print(
                f"| {arch.upper()} stream | {r['peak_50']:.1f} | {r['peak_n']:.1f} | {r['ratio']:.3f} | "
                f"{r['rss_50']:.1f} | {r['rss_n']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
