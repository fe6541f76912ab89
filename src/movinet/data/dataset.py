"""Map-style clip datasets over the frame cache, with video augmentations written in torch.

A sample is ``(clip, label)``: ``clip`` is float ``(C, T, H, W)`` in [0, 1], ``label`` the class
index. For a GPU the clip is sent as uint8 (``as_uint8``: the same values x 255, rounded), a quarter of
the bytes through the DataLoader's worker pipes and the host-to-device copy; the model's side turns
it back into [0, 1] floats (``to_unit_float``). Frames come from the memory-mapped cache arrays, so
reading a clip is an index, not a decode.
Training: random resized crop (one box for the whole clip) and, only where the class allows it,
horizontal flip (``no_flip`` lists the classes a mirror image would change, e.g. left/right
motion). Evaluation: deterministic resize of the short side and center crop.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from movinet.data.clips import Clip, ClipParams, cached_labels, candidate_starts, evenly_spaced_starts, index_clips
from movinet.data.extract import load_index
from movinet.data.ingest import read_classes, read_frame_labels, read_splits


@dataclass(frozen=True)
class Augment:
    crop_size: int = 172
    scale: tuple[float, float] = (0.4, 1.0)  # area of the crop box over the frame
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False
    no_flip: tuple[str, ...] = ()  # classes a mirror image would turn into another (move_left...)


def to_unit_float(clip: torch.Tensor) -> torch.Tensor:
    """A batch as the model takes it: uint8 batches (``ClipDataset.as_uint8``) scaled to [0, 1]."""
    return clip.float().div_(255.0) if clip.dtype == torch.uint8 else clip


def random_resized_crop(clip: torch.Tensor, size: int, scale, ratio, rng: random.Random) -> torch.Tensor:
    """One random box (area share in ``scale``, aspect in ``ratio``) for all frames, resized."""
    _, _, h, w = clip.shape
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
            break
    else:
        ch = cw = min(h, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    return resize_clip(clip[:, :, top : top + ch, left : left + cw], (size, size))


def center_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` and cut the central ``size x size`` square."""
    _, _, h, w = clip.shape
    if min(h, w) != size:
        scale = size / min(h, w)
        clip = resize_clip(clip, (max(size, round(h * scale)), max(size, round(w * scale))))
        _, _, h, w = clip.shape
    top, left = (h - size) // 2, (w - size) // 2
    return clip[:, :, top : top + size, left : left + size]


def resize_clip(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, T, H, W)`` to ``size`` (antialiased bilinear: the one resize of training and inference)."""
    if tuple(clip.shape[-2:]) == size:
        return clip
    # (C, T, H, W): frames are the batch of a 2-D resize.
    frames = clip.permute(1, 0, 2, 3)
    out = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.permute(1, 0, 2, 3)


class ClipDataset(Dataset):
    def __init__(
        self,
        frames_dir: str | Path,
        clips: list[Clip],
        classes: list[str],
        params: ClipParams,
        augment: Augment,
        train: bool,
    ) -> None:
        self.frames_dir = Path(frames_dir)
        self.index = load_index(frames_dir)["videos"]
        self.clips = clips
        self.classes = classes
        self.class_index = {c: i for i, c in enumerate(classes)}
        self.params = params
        self.augment = augment
        self.train = train
        self._arrays: dict[str, np.ndarray] = {}
        self.as_uint8 = False  # set by the DataModule when batches go to a GPU

    def __len__(self) -> int:
        return len(self.clips)

    def frames(self, video: str) -> np.ndarray:
        array = self._arrays.get(video)
        if array is None:  # opened lazily: each DataLoader worker maps its own files
            array = np.load(self.frames_dir / self.index[video]["file"], mmap_mode="r")
            self._arrays[video] = array
        return array

    def read_clip(self, clip: Clip) -> torch.Tensor:
        """The clip's frames as uint8 ``(T, H, W, 3)``."""
        return torch.from_numpy(np.ascontiguousarray(self.frames(clip.video)[self.params.frame_indices(clip.start)]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[i]
        x = self.read_clip(clip).permute(3, 0, 1, 2).float().div_(255.0)  # (C, T, H, W)
        if self.train:
            # Drawn from torch's generator: seeded by seed_everything and per DataLoader worker,
            # and advancing every call, so each epoch sees new crops.
            rng = random.Random(int(torch.randint(0, 2**62, ())))
            x = random_resized_crop(x, self.augment.crop_size, self.augment.scale, self.augment.ratio, rng)
            if self.augment.hflip and clip.label not in self.augment.no_flip and rng.random() < 0.5:
                x = x.flip(-1)
        else:
            x = center_crop(x, self.augment.crop_size)
        if self.as_uint8:
            x = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return x.contiguous(), self.class_index[clip.label]


def build_clips(
    frames_dir: str | Path,
    labels_dir: str | Path,
    split: str,
    params: ClipParams,
    train_hop: int | None = None,
    eval_clips_per_video: int = 4,
) -> tuple[list[Clip], list[str]]:
    """The clips of one split. Training: every valid window, ``train_hop`` apart (None: all starts,
    for random-start sampling); evaluation: ``eval_clips_per_video`` fixed, evenly spaced windows.
    Each lies inside one stretch of the split (``movinet.data.splits``), half a clip span away from a
    cut that another split's stretch of the same video lies beyond."""
    index = load_index(frames_dir)["videos"]
    labels = read_frame_labels(labels_dir)
    classes = read_classes(labels_dir) + (["background"] if params.include_background else [])
    clips: list[Clip] = []
    for stretch in read_splits(labels_dir):
        if stretch.split != split or stretch.video not in index:
            continue
        entry = index[stretch.video]
        first, length = cached_range(entry["source_index"], entry["source_frames"], stretch, params.span)
        if split == "train":
            starts = candidate_starts(length, params)
            if train_hop:
                starts = starts[::train_hop]
        else:
            starts = evenly_spaced_starts(length, params, eval_clips_per_video)
        per_frame = cached_labels(entry["source_index"], labels.get(stretch.video, {}))
        clips += index_clips(stretch.video, per_frame, params, [first + s for s in starts])
    return clips, classes


def cached_range(source_index: list[int], source_frames: int, stretch, span: int) -> tuple[int, int]:
    """(first cached frame, number of cached frames) a stretch's clips may use: its source frames
    ``start..end`` at the cache's rate, less half a clip span at a cut inside the video."""
    inside = [i for i, src in enumerate(source_index) if stretch.start <= src <= stretch.end]
    if not inside:
        return 0, 0
    first, last = inside[0], inside[-1]
    margin = (span + 1) // 2
    if stretch.start > 0:
        first += margin
    if stretch.end < source_frames - 1:
        last -= margin
    return first, max(0, last - first + 1)
