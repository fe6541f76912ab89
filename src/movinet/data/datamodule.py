"""LightningDataModule over the frame cache and the ingested labels, built from the typed config."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from movinet.config import Config, resolve_path
from movinet.data.clips import ClipParams
from movinet.data.dataset import Augment, ClipDataset, build_clips, to_unit_float

MAX_AUTO_WORKERS = 16


def auto_workers(processes_per_machine: int = 1) -> int:
    """``num_workers: auto``: the CPUs this process may use, shared by the training processes of the
    machine, less one each for the training loop itself; at most ``MAX_AUTO_WORKERS``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cpus // max(1, processes_per_machine) - 1, MAX_AUTO_WORKERS))


class ShardedEvalSampler(DistributedSampler):
    """Validation under DDP: rank r takes clips r, r + world, r + 2 world, ... and nothing more.
    ``DistributedSampler`` pads the last shard with repeats, which would count some clips twice."""

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


class ClipDataModule(L.LightningDataModule):
    def __init__(
        self,
        frames_dir: str | Path,
        labels_dir: str | Path,
        params: ClipParams,
        augment: Augment,
        batch_size: int = 8,
        num_workers: int | str = 0,
        train_sampling: str = "hop",
        train_hop: int | None = None,
        eval_clips_per_video: int = 4,
        pin_memory: bool | None = None,
        uint8_batches: bool | None = None,
    ) -> None:
        super().__init__()
        if train_sampling not in ("hop", "random"):
            raise ValueError(f"train_sampling must be 'hop' or 'random', got {train_sampling!r}")
        self.frames_dir, self.labels_dir = Path(frames_dir), Path(labels_dir)
        self.params, self.augment = params, augment
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_sampling = train_sampling
        # Hop between training windows: default half a clip span.
        self.train_hop = train_hop or max(1, params.span // 2)
        self.eval_clips_per_video = eval_clips_per_video
        self.pin_memory, self.uint8_batches = pin_memory, uint8_batches
        self.datasets: dict[str, ClipDataset] = {}
        self.classes: list[str] = []

    @classmethod
    def from_config(cls, cfg: Config, root: str | Path | None = None) -> ClipDataModule:
        data = cfg.data
        augment = Augment(
            crop_size=data.transform.crop_size,
            scale=tuple(data.transform.crop_scale),
            hflip=data.transform.hflip,
            no_flip=tuple(data.transform.no_flip_classes),
        )
        return cls(
            resolve_path(data.extract.out_dir, root),
            resolve_path(data.labels.out_dir, root),
            ClipParams.from_config(cfg),
            augment,
            batch_size=data.loader.batch_size,
            num_workers=data.loader.num_workers,
            train_sampling=data.clips.train_sampling.value,
            train_hop=data.clips.train_hop,
            eval_clips_per_video=data.clips.eval_clips_per_video,
            pin_memory=data.loader.pin_memory,
            uint8_batches=data.loader.uint8_batches,
        )

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split in self.datasets:
                continue
            hop = None if (split == "train" and self.train_sampling == "random") else self.train_hop
            clips, self.classes = build_clips(
                self.frames_dir, self.labels_dir, split, self.params, hop, self.eval_clips_per_video
            )
            self.datasets[split] = ClipDataset(
                self.frames_dir, clips, self.classes, self.params, self.augment, train=split == "train"
            )

    def _workers(self) -> int:
        if self.num_workers != "auto":
            return int(self.num_workers)
        trainer = getattr(self, "trainer", None)
        return auto_workers(trainer.num_devices if trainer is not None else 1)

    def _on_cuda(self) -> bool:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def _pin(self) -> bool:
        """Pinned host memory (so copies to the GPU run asynchronously) when training on CUDA."""
        return self.pin_memory if self.pin_memory is not None else self._on_cuda()

    def _uint8(self) -> bool:
        """uint8 batches on CUDA: float32 clips cap a DataLoader at a few hundred clips/s of
        inter-process copies (docs/benchmarks.md), far below what one GPU trains."""
        return self.uint8_batches if self.uint8_batches is not None else self._on_cuda()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        dataset.as_uint8 = self._uint8()
        sampler = None
        if split == "train" and self.train_sampling == "random":
            # Random start: draw from every valid window, as many per epoch as the hop would give.
            per_epoch = max(1, len(dataset) // self.train_hop)
            sampler, shuffle = RandomSampler(dataset, num_samples=per_epoch), False
        trainer = getattr(self, "trainer", None)
        if split != "train" and trainer is not None and trainer.world_size > 1:
            sampler = ShardedEvalSampler(dataset, trainer.world_size, trainer.global_rank)
        workers = self._workers()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._pin(),
            drop_last=split == "train" and len(dataset) > self.batch_size,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 batches (on CUDA) become [0, 1] floats on the device."""
        x, y = batch
        return to_unit_float(x), y

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
