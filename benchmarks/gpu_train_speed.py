"""GPU training throughput and how busy the loader keeps the GPU (issue #13's GPU check).

    python benchmarks/gpu_train_speed.py [--archs a0 a2] [--batch 32] [--frames 16] [--workers auto]

Per model, in one run, on a synthetic frame cache in the project's format (uint8 ``.npy`` per video,
``index.json``, labels ingested by ``movinet.data.ingest``) at the model's resolution:

* **device ceiling**: training steps on one batch already on the GPU (no loader): the most the GPU
  can do; bf16 autocast, and with ``channels_last_3d``;
* **loader alone**: clips/s the DataLoader delivers to the GPU (workers, pinned memory), no model,
  with float32 batches and with uint8 batches (the default on CUDA: scaled on the GPU);
* **Lightning**: ``VideoClassifier`` under ``lightning.Trainer`` (``bf16-mixed``), fed by
  ``ClipDataModule``: clips/s, and the GPU busy share = its clips/s over the device ceiling, with
  the mean of NVML's utilisation sampled while it runs.

Target: the loader keeps the GPU >= 90 % busy. Needs a CUDA GPU (``--device cpu`` runs the same
code on tiny sizes, to check the script).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from movinet.data.clips import ClipParams
from movinet.data.datamodule import ClipDataModule, auto_workers
from movinet.data.dataset import Augment, to_unit_float
from movinet.data.ingest import ingest_labels
from movinet.models import SPECS, build
from movinet.training.module import VideoClassifier

CLASSES = [f"class_{i}" for i in range(8)]


def synthetic_cache(root: Path, videos: int, frames: int, height: int, width: int) -> tuple[Path, Path]:
    """A frame cache and ingested labels in the project's formats (random frames, one label per video)."""
    cache, rng = root / "frames", np.random.default_rng(0)
    (cache / "frames").mkdir(parents=True)
    entries, rows = {}, []
    for v in range(videos):
        name = f"v{v:03d}.mp4"
        array = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        np.save(cache / "frames" / f"v{v:03d}.npy", array)
        entries[name] = {
            "file": f"frames/v{v:03d}.npy",
            "frames": frames,
            "height": height,
            "width": width,
            "fps": 15.0,
            "source_frames": frames,
            "source_fps": 15.0,
            "source_index": list(range(frames)),
        }
        rows.append({"filename": name, "label": CLASSES[v % len(CLASSES)]})
    (cache / "index.json").write_text(json.dumps({"params": {}, "videos": entries}))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["filename", "label"])
        writer.writeheader()
        writer.writerows(rows)
    ingest_labels(root / "labels.csv", cache, root / "labels", split_by="auto")
    return cache, root / "labels"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def device_ceiling(arch: str, batch: int, frames: int, device: str, steps: int, channels_last: bool) -> float:
    """Clips/s of training steps on one resident batch (bf16 autocast on CUDA)."""
    res = SPECS[arch].resolution if device == "cuda" else 32
    model = build(arch, "base", len(CLASSES)).to(device)
    x = torch.rand(batch, 3, frames, res, res, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last_3d), x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, len(CLASSES), (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def _forever(data: ClipDataModule):
    while True:
        yield from data.train_dataloader()


def loader_alone(data: ClipDataModule, device: str, batches: int, uint8: bool) -> float:
    """Clips/s the DataLoader delivers onto the device as [0, 1] floats, sent as float32 or uint8."""
    data.uint8_batches = uint8
    loader = _forever(data)
    for _ in range(3):
        next(loader)
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        x, y = next(loader)
        x = to_unit_float(x.to(device, non_blocking=True))
        clips += len(y)
    sync(device)
    return clips / (time.perf_counter() - start)


class Throughput(L.Callback):
    """Clips/s from step ``warmup`` on, and NVML's GPU utilisation sampled meanwhile."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.clips, self.util = warmup, None, None, 0, []
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.util.append(torch.cuda.utilization())
            except Exception:  # no NVML: the clips/s ratio still says it
                return

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            self.start = time.perf_counter()
            if torch.cuda.is_available():
                threading.Thread(target=self._sample, daemon=True).start()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self.clips += len(batch[1])

    def on_train_end(self, trainer, module) -> None:
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        self.end = time.perf_counter()
        self._stop.set()


def lightning_fit(arch: str, data: ClipDataModule, device: str, steps: int, warmup: int, root: Path) -> Throughput:
    module = VideoClassifier(arch, "base", CLASSES, steps=steps)
    timer = Throughput(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if device == "cuda" else "32-true",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=device == "cuda",
        default_root_dir=root,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--archs", nargs="+", default=["a0", "a2"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--workers", default="auto", help="DataLoader workers, or auto")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    workers = auto_workers() if args.workers == "auto" else int(args.workers)
    print(f"# movinet GPU training speed: torch {torch.__version__}, {args.device}", end="")
    print(f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "", end="")
    print(f", {os.cpu_count()} CPUs, {workers} loader workers, batch {args.batch}, T={args.frames}, bf16-mixed")
    print("\n| model | crop | device ceiling clips/s | + channels_last_3d | loader alone, float32 batches |", end="")
    print(" loader alone, uint8 batches |", end="")
    print(" Lightning clips/s | GPU busy (clips/s share) | NVML utilisation % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        res = SPECS[arch].resolution if args.device == "cuda" else 32
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            height = round(res * 1.15)
            cache, labels = synthetic_cache(root, args.videos, 6 * args.frames, height, round(height * 16 / 9))
            data = ClipDataModule(
                cache,
                labels,
                ClipParams(num_frames=args.frames),
                Augment(crop_size=res, scale=(0.4, 1.0), hflip=True),
                batch_size=args.batch,
                num_workers=workers,
                pin_memory=args.device == "cuda",
                train_sampling="random",
            )
            data.setup()
            ceiling = device_ceiling(arch, args.batch, args.frames, args.device, args.steps // 2, False)
            ceiling_cl = device_ceiling(arch, args.batch, args.frames, args.device, args.steps // 2, True)
            alone_f32 = loader_alone(data, args.device, args.steps // 2, uint8=False)
            alone = loader_alone(data, args.device, args.steps // 2, uint8=True)
            data.uint8_batches = None  # the default: uint8 on CUDA
            timer = lightning_fit(arch, data, args.device, args.steps, args.warmup, root)
            fit = timer.clips / (timer.end - timer.start)
            util = f"{np.mean(timer.util):.0f}" if timer.util else "n/a"
            print(
                f"| {arch.upper()} base | {args.frames}x{res}^2 | {ceiling:.1f} | {ceiling_cl:.1f} | {alone_f32:.1f} | "
                f"{alone:.1f} | "
                f"{fit:.1f} | {fit / max(ceiling, ceiling_cl):.2f} | {util} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
