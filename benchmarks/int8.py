"""int8 against fp32: the stream step per frame (TracedStream, fp32 ONNX, int8 ONNX) and, with
``--accuracy``, a trained stream model's test accuracy in fp32 and int8, side by side.

Speed: random weights, each arch at its resolution (A0 172², A2 224²), exported
(``export_stream_onnx``) and quantised as ``movinet export onnx --int8`` does
(``quantize_stream_onnx``; calibrated on random frames here: the ranges change the answers, not the
time). The three paths take turns frame by frame (``per_frame_medians`` of model_speed.py), so
load from other processes falls on all alike; onnxruntime gets as many threads as torch.

Accuracy (run from the project root after ``make demo``; the demo's own model is a base model, which
has no stream step to export, so train a stream one first):

    .venv/bin/python pipelines/train.py model.variant=stream train.name=video_stream
    .venv/bin/python benchmarks/int8.py --accuracy models/video_stream/model.pt

The checkpoint's config names the data. Calibration: the val split's evaluation clips from the
frame cache (what the model sees, and not the test clips), streamed frame by frame. Scored: the test
split's evaluation clips, as the evaluate stage scores them (``test_acc`` of metrics/<name>.json):
the PyTorch model (fast path), its fp32 ONNX step and the int8 one, each clip streamed from a zero
state (a stream model's clip answer is its logits after the clip's last frame).

    python benchmarks/int8.py [--threads 2] [--frames 50] [--repeats 3] [--archs a0 a2]
    python benchmarks/int8.py --accuracy MODEL.pt [--calibration-clips 32] [--threads 2]

Ship int8 only where it is faster than what ``movinet stream`` runs already (TracedStream) and the
accuracy drop is at most 1 point.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
from pathlib import Path

import torch
from model_speed import per_frame_medians  # beside this script: on sys.path when it runs

from movinet.inference.onnx_export import OnnxStream, export_preprocessing, export_stream_onnx
from movinet.inference.onnx_int8 import quantize_stream_onnx
from movinet.models import SPECS, TracedStream, build, optimize_for_inference


def onnx_path(path: Path, threads: int) -> tuple:
    """An exported step as a ``per_frame_medians`` path: ``(start, step)``."""
    runtime = OnnxStream(path, threads)
    return runtime.init_state, lambda frame, state: runtime(frame, state)[1]


def stream_speed(arch: str, frames: int, repeats: int, threads: int) -> dict:
    """Median ms per frame of TracedStream, fp32 ONNX and int8 ONNX, and the files' sizes in MB."""
    res = SPECS[arch].resolution
    model = build(arch, "stream").eval()
    ours = TracedStream(model)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_stream_onnx(model, Path(tmp) / "fp32.onnx", res)
        int8 = quantize_stream_onnx(fp32, Path(tmp) / "int8.onnx", [torch.rand(3, 16, res, res) for _ in range(2)])
        paths = {
            "traced": (ours.init_state, lambda frame, state: ours(frame, state)[1]),
            "fp32": onnx_path(fp32, threads),
            "int8": onnx_path(int8, threads),
        }
        with torch.inference_mode():
            ms = {k: v * 1e3 for k, v in per_frame_medians(paths, torch.rand(1, 3, frames, res, res), repeats).items()}
        ms["fp32_mb"], ms["int8_mb"] = fp32.stat().st_size / 2**20, int8.stat().st_size / 2**20
    return ms


def print_speed(args) -> None:
    print("\n## Stream per-frame latency: TracedStream, fp32 ONNX, int8 ONNX (random weights, taking turns)")
    print("| model | res | TracedStream ms | fp32 ONNX ms | int8 ONNX ms | int8 vs fp32 ONNX | int8 vs TracedStream |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs:
        r = stream_speed(arch, args.frames, args.repeats, args.threads)
        print(
            f"| {arch.upper()} stream | {SPECS[arch].resolution} | {r['traced']:.2f} | {r['fp32']:.2f} | "
            f"{r['int8']:.2f} | {r['fp32'] / r['int8']:.2f}x | {r['traced'] / r['int8']:.2f}x |"
            f" files {r['fp32_mb']:.1f} / {r['int8_mb']:.1f} MB",
            flush=True,
        )


def accuracy(path: str, calibration_clips: int, threads: int) -> dict:
    """Test metrics of the checkpoint at ``path``: PyTorch, fp32 ONNX, int8 ONNX."""
    from movinet.config import to_config
    from movinet.models.weights import load_checkpoint
    from movinet.training.evaluate import test_split
    from movinet.training.metrics import score

    model, payload = load_checkpoint(path)
    if not model.causal:
        sys.exit(f"{path}: a base model has no stream step to export; train a stream one (see --help)")
    cfg = to_config(payload["config"])
    data = test_split(cfg, Path.cwd(), payload["class_names"])
    crop = cfg.data.transform.crop_size
    fast, logits, labels = optimize_for_inference(model), {"pytorch": [], "fp32": [], "int8": []}, []
    with tempfile.TemporaryDirectory() as tmp:
        prep = export_preprocessing(payload["config"], crop)
        fp32 = export_stream_onnx(model, Path(tmp) / "fp32.onnx", crop, preprocessing=prep)
        val = list(itertools.islice((clip for x, _ in data.val_dataloader() for clip in x), calibration_clips))
        int8 = quantize_stream_onnx(fp32, Path(tmp) / "int8.onnx", val)
        runtimes = {"fp32": OnnxStream(fp32, threads), "int8": OnnxStream(int8, threads)}
        with torch.inference_mode():
            for x, y in data.test_dataloader():
                logits["pytorch"].append(fast(x))
                for name, runtime in runtimes.items():
                    logits[name].append(runtime.clip_logits(x))
                labels.append(y)
    labels = torch.cat(labels)
    rows = {name: score(torch.cat(v), labels, len(data.classes)) for name, v in logits.items()}
    agree = (torch.cat(logits["int8"]).argmax(1) == torch.cat(logits["fp32"]).argmax(1)).float().mean().item()
    return {"rows": rows, "int8_agrees": agree, "test_clips": len(labels), "calibration_clips": len(val)}


def print_accuracy(args) -> None:
    r = accuracy(args.accuracy, args.calibration_clips, args.threads)
    print(f"\n## Test accuracy, fp32 against int8 ({args.accuracy}, {r['test_clips']} test clips)")
    agree = r["int8_agrees"]
    print(
        f"int8 calibrated on {r['calibration_clips']} val clips; int8 top-1 = fp32 ONNX top-1 on {agree:.1%} of clips"
    )
    print("| path | test_acc | test_macro_f1 | test_top5 |")
    print("|---|---|---|---|")
    for name, m in r["rows"].items():
        label = {"pytorch": "PyTorch fp32 (evaluate stage)", "fp32": "ONNX fp32", "int8": "ONNX int8"}[name]
        top5 = f"{m['test_top5']:.3f}" if "test_top5" in m else "-"
        print(f"| {label} | {m['test_acc']:.3f} | {m['test_macro_f1']:.3f} | {top5} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=50, help="frames streamed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", nargs="+", default=["a0", "a2"])
    parser.add_argument("--accuracy", metavar="MODEL.pt", help="a trained stream checkpoint: test accuracy instead")
    parser.add_argument("--calibration-clips", type=int, default=32, help="--accuracy: val clips to calibrate on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# movinet int8: torch {torch.__version__}, {args.threads} threads, {cpu}")
    if args.accuracy:
        print_accuracy(args)
    else:
        print_speed(args)


if __name__ == "__main__":
    main()
