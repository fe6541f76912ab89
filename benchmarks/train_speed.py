"""Training throughput: the full Lightning + MLflow path vs a bare torch loop, same model and data.

    python benchmarks/train_speed.py [--steps 60] [--warmup 10]

Both loops read the same DataLoader (frame cache, augmentation) and train the same MoViNet-A0 with
the same optimizer; the full path adds Lightning, torchmetrics, checkpointing and MLflow logging
(per-step curves into an SQLite store). Clips/s is timed from step ``warmup`` to the last step.
Target: overhead <= 5 %.

A second baseline in the same run: the bare loop with PyTorch's own depthwise-conv backward
(``fast_depthwise_backward(False)``), against ours (``movinet.models.depthwise``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from movinet.config import Config, compose, to_config
from movinet.config.schema import GenerateConfig
from movinet.data.datamodule import ClipDataModule
from movinet.data.demo import make_demo_data
from movinet.data.extract import extract_videos
from movinet.data.ingest import ingest_labels
from movinet.models import build
from movinet.models.depthwise import fast_depthwise_backward
from movinet.training.optim import build_optimizer, warmup_cosine
from movinet.training.run import run_training

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.clips = warmup, None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self.clips += len(batch[1])
            self.end = time.perf_counter()


def bare_loop(cfg: Config, root: Path, steps: int, warmup: int) -> float:
    torch.manual_seed(cfg.seed)
    data = ClipDataModule.from_config(cfg, root)
    data.setup()
    model = build(cfg.model.arch, cfg.model.variant.value, len(data.classes), cfg.model.dropout)
    model.set_bn_momentum(cfg.model.bn_momentum)
    model.train()
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    schedule = warmup_cosine(optimizer, cfg.optim.warmup_steps, steps)
    step, clips, start = 0, 0, None
    while step < steps:
        for x, y in data.train_dataloader():
            if step == warmup:
                start = time.perf_counter()
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.train.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            schedule.step()
            step += 1
            if start is not None:
                clips += len(y)
            if step >= steps:
                break
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        make_demo_data(root / "demo", GenerateConfig(videos=24))
        cfg = to_config(
            compose(
                [
                    f"data.extract.out_dir={root / 'frames'}",
                    f"data.labels.out_dir={root / 'labels'}",
                    f"train.steps={args.steps}",
                    f"train.eval_interval={10 * args.steps}",
                ],
                root=ROOT,
            )
        )
        data = cfg.data
        extract_videos(
            root / "demo" / "videos", root / "frames", fps=data.extract.fps, size=data.extract.size, progress=False
        )
        ingest_labels(
            root / "demo" / "labels.csv", root / "frames", root / "labels", interpolation="nearest", on_error="skip"
        )
        torch.set_num_threads(cfg.trainer.threads)
        with fast_depthwise_backward(False):
            torch_backward = bare_loop(cfg, ROOT, args.steps, args.warmup)
        bare = bare_loop(cfg, ROOT, args.steps, args.warmup)
        timer = StepTimer(args.warmup)
        run_training(cfg, root / "run", ROOT, callbacks=[timer])
        full = timer.clips / (timer.end - timer.start)
    print(
        f"# movinet train speed: MoViNet-{cfg.model.arch.upper()} {cfg.model.variant.value}, "
        f"batch {data.loader.batch_size}, T={data.clips.num_frames}, {data.transform.crop_size}², "
        f"{cfg.trainer.threads} threads, steps {args.warmup}..{args.steps}"
    )
    print("\n| path | clips/s | vs bare loop |")
    print("|---|---|---|")
    print(f"| bare torch loop, PyTorch's depthwise backward | {torch_backward:.1f} | {torch_backward / bare:.3f} |")
    print(f"| bare torch loop | {bare:.1f} | 1.00 |")
    overhead = 100 * (1 - full / bare)
    print(f"| Lightning + torchmetrics + MLflow | {full:.1f} | {full / bare:.3f} (overhead {overhead:.1f} %) |")


if __name__ == "__main__":
    main()
