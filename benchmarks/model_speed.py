"""Model speed on this machine: clips, streams, memory, the fp32 peak and the PyTorch port (--peer).

Clip latency, per-frame streaming latency, streaming memory and GMAC/s, the fp32 peak, and with
``--peer`` the PyTorch port side by side.

Every figure is printed next to a baseline measured in the same run: the plain eager model (BN as
separate ops, default memory layout) against the inference fast path (``optimize_for_inference``:
BN folded, in-place activations, channels-last-3d, ``torch.inference_mode``); for streaming,
``TracedStream`` (on the CPU the per-frame 2-D step) against the traced model graph it replaced
(``TracedGraphStream``) and against itself without our C++ kernel (``native=False``, what a machine
without a compiler runs), taking turns frame by frame, and onnxruntime on the exported step.
The peak is a 2048^3 fp32 ``torch.mm`` (achievable) and clock x FMA width (theoretical); the A0 base
clip's GMAC/s is given as a share of both (1 MAC = 2 FLOP).

``--peer PATH`` takes a checkout of Atze00/MoViNet-pytorch (never part of this project; it imports
``einops`` and ``fvcore``) and times its A0 and A2, base clips and frame-by-frame streams (causal,
its activation buffers, TF-like padding, random weights), against ours in the same run, taking
turns, and prints port time / our time.

    python benchmarks/model_speed.py [--threads 2] [--device cpu|cuda] [--repeats 5]
        [--peer PATH [--peer-only]]

Targets (2 CPU threads): A0 base clip <= 0.15 s and >= 30 % of the fp32 peak, A0 stream <= 5 ms/frame,
A2 stream <= 10 ms/frame, streams >= 3x the port, streaming memory flat (1000 frames <= 1.1x of 50).
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

from movinet.models import ARCHS, SPECS, TracedStream, build, native, optimize_for_inference
from movinet.models.fast import TracedGraphStream
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


def gemm_peak(threads: int, size: int = 2048, repeats: int = 5) -> dict:
    """The achievable fp32 ceiling: GFLOP/s of a ``size``³ ``torch.mm`` (2·size³ FLOP per product),
    best and median of ``repeats`` (best is the ceiling; the median shows how noisy the machine is)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return {"best": max(rates), "median": statistics.median(rates), "threads": threads}


def fma_peak(threads: int) -> tuple[float | None, str]:
    """The theoretical fp32 FMA peak in GMAC/s for ``threads`` cores, from /proc/cpuinfo: clock ×
    FMAs per cycle. AMD Zen 3/4 (family 25) and AVX2 cores have two 256-bit FMA pipes (16 fp32 FMA
    per cycle; Zen 4 runs AVX-512 as two halves); Intel AVX-512 servers and Zen 5 two 512-bit pipes (32)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo"
    field = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        field.setdefault(key.strip(), value.strip())
    flags = set(field.get("flags", "").split())
    if "fma" not in flags or "cpu MHz" not in field:
        return None, "no FMA flag or clock in /proc/cpuinfo"
    ghz = float(field["cpu MHz"]) / 1e3
    amd, family = field.get("vendor_id") == "AuthenticAMD", int(field.get("cpu family", "0"))
    wide = "avx512f" in flags and ((amd and family >= 26) or not amd)
    per_cycle = 32 if wide else 16
    name = field.get("model name", "?")
    note = f"{threads} cores x {per_cycle} fp32 FMA/cycle x {ghz:.3f} GHz ({name}, family {family})"
    return threads * per_cycle * ghz, note


def load_peer(path: str):
    """The PyTorch port (Atze00/MoViNet-pytorch) from a checkout at ``path``: its ``movinets`` package
    and its config. Its code is never part of this project; its imports are its own needs."""
    root = Path(path).resolve()
    if not (root / "movinets" / "models.py").is_file():
        raise SystemExit(f"--peer {path}: no movinets/models.py there; give a checkout of Atze00/MoViNet-pytorch")
    sys.path.insert(0, str(root))
    try:
        from movinets import MoViNet as PeerMoViNet
        from movinets.config import _C
    except ModuleNotFoundError as err:
        raise SystemExit(
            f"--peer {path}: the port imports {err.name!r}, which is not installed here (pip install {err.name}; "
            "the port needs it, this project does not)"
        ) from err
    return PeerMoViNet, _C


def peer_model(peer, arch: str, variant: str) -> nn.Module:
    """The port's model as its README builds it: base = non-causal 3-D convs, stream = causal (2+1)-D
    with its activation buffers; TF-like padding, random weights, eval mode."""
    cls, cfg = peer
    causal = variant == "stream"
    conv_type = "2plus1d" if causal else "3d"
    return cls(getattr(cfg.MODEL, f"MoViNet{arch.upper()}"), causal=causal, conv_type=conv_type, tf_like=True).eval()


def alternate(paths: dict, repeats: int) -> dict:
    """Median seconds of each path, the paths taking turns in every round so that load from other
    processes falls on all of them alike (one warm-up call each first)."""
    times: dict = {name: [] for name in paths}
    for fn in paths.values():
        fn()
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peer_clip(peer, arch: str, frames: int, repeats: int) -> dict:
    res = SPECS[arch].resolution
    theirs, ours = peer_model(peer, arch, "base"), optimize_for_inference(build(arch, "base").eval())
    clip = torch.rand(1, 3, frames, res, res)
    with torch.inference_mode():
        return alternate({"port": lambda: theirs(clip), "ours": lambda: ours(clip)}, repeats)


def per_frame_medians(paths: dict, clip: torch.Tensor, repeats: int, sync=lambda: None) -> dict:
    """Median seconds per frame of each path, the paths taking turns frame by frame so that load from
    other processes falls on all alike; one warm-up pass is not counted. A path is ``(start, step)``:
    ``state = start()``, then ``state = step(frame, state)`` for every frame of ``clip``."""
    times: dict = {name: [] for name in paths}
    for rep in range(repeats + 1):
        states = {name: start() for name, (start, _) in paths.items()}
        for t in range(clip.shape[2]):
            frame = clip[:, :, t : t + 1]
            for name, (_, step) in paths.items():
                begin = time.perf_counter()
                states[name] = step(frame, states[name])
                sync()
                if rep:
                    times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in times.items()}


def traced_paths(model: nn.Module) -> dict:
    """``TracedStream`` (what the product runs), the same without our C++ kernel (``aten``: where it
    cannot be built; only where it can, on the CPU) and the traced model graph (``TracedGraphStream``,
    the stream path before the per-frame step, still the one off the CPU) as ``per_frame_medians`` paths."""
    ours, graph = TracedStream(model), TracedGraphStream(model)
    paths = {"ours": (ours.init_state, lambda frame, state: ours(frame, state)[1])}
    if next(model.parameters()).device.type == "cpu" and native.available():
        aten = TracedStream(model, native=False)
        paths["aten"] = (aten.init_state, lambda frame, state: aten(frame, state)[1])
    paths["graph"] = (graph.init_state, lambda frame, state: graph(frame, state)[1])
    return paths


def peer_stream(peer, arch: str, frames: int, repeats: int) -> dict:
    """Per-frame stream latency of the port, ``TracedStream`` and the traced model graph, taking
    turns; then ``TracedStream`` alone (``alone``), frame after frame as a camera's stream runs it,
    with no other model's weights evicting its own from the caches between frames."""
    res = SPECS[arch].resolution
    theirs = peer_model(peer, arch, "stream")
    paths = {"port": (theirs.clean_activation_buffers, lambda frame, _: theirs(frame))}
    paths.update(traced_paths(build(arch, "stream").eval()))
    clip = torch.rand(1, 3, frames, res, res)
    with torch.inference_mode():
        medians = per_frame_medians(paths, clip, repeats)
        medians["alone"] = per_frame_medians({"ours": paths["ours"]}, clip, repeats)["ours"]
    return medians


def print_peer(peer, path: str, frames: int, repeats: int) -> None:
    print(f"\n## Against the PyTorch port ({path}), same run, random weights, taking turns")
    print(
        "| model | port | ours | port / ours | ours before: traced model graph | port / before | ours alone "
        "| ours without the C++ kernel | port / that |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in ("a0", "a2"):
        res = SPECS[arch].resolution
        r = peer_clip(peer, arch, frames, repeats)
        print(
            f"| {arch.upper()} base {frames}x{res}^2 | {r['port']:.3f} s | {r['ours']:.3f} s | "
            f"{r['port'] / r['ours']:.2f}x | | | | | |",
            flush=True,
        )
    for arch in ("a0", "a2"):
        r = peer_stream(peer, arch, frames, max(1, repeats // 2))
        print(
            f"| {arch.upper()} stream, per frame | {r['port'] * 1e3:.2f} ms | {r['ours'] * 1e3:.2f} ms | "
            f"{r['port'] / r['ours']:.2f}x | {r['graph'] * 1e3:.2f} ms | {r['port'] / r['graph']:.2f}x | "
            f"{r['alone'] * 1e3:.2f} ms | "
            + (f"{r['aten'] * 1e3:.2f} ms | {r['port'] / r['aten']:.2f}x |" if "aten" in r else "n/a | |"),
            flush=True,
        )


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

    with torch.inference_mode():
        row = {
            "eager_ms": timed(lambda: run(model), 1, sync) / frames * 1e3,
            "fast_ms": timed(lambda: run(fast), 3, sync) / frames * 1e3,
            "gmacs_frame": per_frame_macs / 1e9,
        }
        medians = per_frame_medians(traced_paths(model), clip, 3, sync)
    row["traced_ms"], row["graph_ms"] = medians["ours"] * 1e3, medians["graph"] * 1e3
    row["aten_ms"] = medians["aten"] * 1e3 if "aten" in medians else None
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


def print_peak(threads: int, a0_gmacs: float | None) -> None:
    """The CPU's fp32 ceiling, measured and theoretical, and the A0 base clip's share of it."""
    peak = gemm_peak(threads)
    theory, note = fma_peak(threads)
    print(f"\n## fp32 peak, {threads} threads (1 MAC = 2 FLOP)")
    print("| ceiling | GFLOP/s | GMAC/s | A0 base share |")
    print("|---|---|---|---|")
    share = f" {a0_gmacs / (peak['best'] / 2):.0%} |" if a0_gmacs else " |"
    best, median = peak["best"], peak["median"]
    print(f"| 2048^3 torch.mm, best (median) | {best:.1f} ({median:.1f}) | {best / 2:.1f} |{share}")
    if theory is not None:
        share = f" {a0_gmacs / theory:.0%} |" if a0_gmacs else " |"
        print(f"| theoretical FMA peak: {note} | {2 * theory:.1f} | {theory:.1f} |{share}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=50, help="clip length for clip and stream timings")
    parser.add_argument("--memory-frames", type=int, default=1000)
    parser.add_argument("--peer", metavar="PATH", help="a checkout of Atze00/MoViNet-pytorch to time side by side")
    parser.add_argument("--peer-only", action="store_true", help="with --peer: only the peak and the port comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# movinet model speed: torch {torch.__version__}, {args.device}, {args.threads} threads, {cpu}")
    if args.device == "cuda":
        print(f"# GPU: {torch.cuda.get_device_name()}")
    peer = load_peer(args.peer) if args.peer else None  # a wrong path fails before any timing
    a0_gmacs = None
    if not args.peer_only:
        a0_gmacs = print_clips(args)
    if args.device == "cpu":
        print_peak(args.threads, a0_gmacs)
    if peer is not None:
        print_peer(peer, args.peer, args.frames, args.repeats)
    if args.peer_only:
        return
    print_streams(args)
    if args.device == "cpu":
        print_memory(args)


def print_clips(args) -> float:
    """The base clip table; returns A0's GMAC/s on the fast path."""
    print("\n## Base clip latency (1 x 3 x T x res^2)")
    print("| model | clip | GMAC | eager s | fast s | speed-up | fast GMAC/s |")
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for arch in ("a0", "a2"):
        r = clip_latency(arch, args.frames, args.repeats, args.device)
        res = SPECS[arch].resolution
        rates[arch] = r["gmacs"] / r["fast_s"]
        print(
            f"| {arch.upper()} base | {args.frames}x{res}^2 | {r['gmacs']:.2f} | {r['eager_s']:.3f} | "
            f"{r['fast_s']:.3f} | {r['eager_s'] / r['fast_s']:.2f}x | {rates[arch]:.1f} |"
            + (f" bf16 autocast {r['fast_bf16_s']:.4f} s |" if "fast_bf16_s" in r else ""),
            flush=True,
        )
    return rates["a0"]


def print_streams(args) -> None:
    print("\n## Stream per-frame latency (one frame per call, state carried)")
    header = (
        "| model | res | GMAC/frame | eager ms | fast ms | traced graph ms (before) | TracedStream ms "
        "| vs eager | vs traced graph | GMAC/s | TracedStream without the C++ kernel ms |"
    )
    print(header + (" onnxruntime ms |" if args.device == "cpu" else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.device == "cpu" else ""))
    for arch in ARCHS:
        r = stream_latency(arch, args.frames, args.device)
        line = (
            f"| {arch.upper()} stream | {SPECS[arch].resolution} | {r['gmacs_frame']:.3f} | "
            f"{r['eager_ms']:.2f} | {r['fast_ms']:.2f} | {r['graph_ms']:.2f} | {r['traced_ms']:.2f} | "
            f"{r['eager_ms'] / r['traced_ms']:.2f}x | {r['graph_ms'] / r['traced_ms']:.2f}x | "
            f"{r['gmacs_frame'] / r['traced_ms'] * 1e3:.1f} | "
            + (f"{r['aten_ms']:.2f} |" if r["aten_ms"] is not None else "n/a |")
        )
        if "onnxruntime_ms" in r:
            line += f" {r['onnxruntime_ms']:.2f} |"
        print(line, flush=True)


def print_memory(args) -> None:
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
