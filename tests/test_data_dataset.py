"""The dataset layer against a frame cache written by hand (no decoding, exact frame values): which
windows each split gets, what a sample holds, and the crops, checked against an independent path."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from conftest import write_frame_cache, write_label_files
from movinet.data.clips import Clip, ClipParams
from movinet.data.dataset import (
    Augment,
    ClipDataset,
    build_clips,
    cached_range,
    center_crop,
    random_resized_crop,
    resize_clip,
    to_unit_float,
)
from movinet.data.splits import Stretch

SIZE = 8  # cached frames are 8 x 8


@pytest.fixture
def cache(tmp_path):
    """``a.mp4``: 40 source frames cached at half the rate (20 cached), all ``walk``, all train.
    ``b.mp4``: 60 source frames cached 1:1; ``run`` for 0..29, ``walk`` for 30..59; train 0..39, test 40..59.
    ``gone.mp4``: in the splits but not in the cache (a failed extraction)."""
    write_frame_cache(tmp_path / "frames", {"a.mp4": (list(range(0, 40, 2)), 40), "b.mp4": (list(range(60)), 60)}, SIZE)
    labels = {
        "a.mp4": dict.fromkeys(range(40), "walk"),
        "b.mp4": {f: ("run" if f < 30 else "walk") for f in range(60)},
        "gone.mp4": dict.fromkeys(range(10), "run"),
    }
    stretches = [
        Stretch("a.mp4", "train", 0, 39),
        Stretch("b.mp4", "train", 0, 39),
        Stretch("b.mp4", "test", 40, 59),
        Stretch("gone.mp4", "train", 0, 9),
    ]
    write_label_files(tmp_path / "labels", labels, stretches, ["run", "walk"])
    return tmp_path


def test_training_windows_by_hand(cache):
    params = ClipParams(4, frame_stride=2)  # span 7, frames start + 0, 2, 4, 6
    clips, classes = build_clips(cache / "frames", cache / "labels", "train", params, train_hop=3)
    assert classes == ["run", "walk"]
    # a.mp4: 20 cached frames, whole video: starts 0..13, every 3rd.
    assert [(c.start, c.label, c.share) for c in clips if c.video == "a.mp4"] == [
        (s, "walk", 1.0) for s in (0, 3, 6, 9, 12)
    ]
    # b.mp4: train 0..39, less half a span (4) before the cut at 40: cached 0..35, starts 0..29 every 3rd.
    # Start 24 sees 24 26 28 30 (3 run, 1 walk); 27 sees 27 29 31 33 (a tie: "run" sorts first).
    assert [(c.start, c.label, c.share) for c in clips if c.video == "b.mp4"] == [
        *[(s, "run", 1.0) for s in (0, 3, 6, 9, 12, 15, 18, 21)],
        (24, "run", 0.75),
        (27, "run", 0.5),
    ]
    assert {c.video for c in clips} == {"a.mp4", "b.mp4"}  # gone.mp4 is not in the cache
    every = build_clips(cache / "frames", cache / "labels", "train", params)[0]  # no hop: every start
    assert [c.start for c in every if c.video == "a.mp4"] == list(range(14))


def test_evaluation_windows_by_hand(cache):
    params = ClipParams(4, frame_stride=2)
    # b.mp4's test stretch 40..59, less half a span after the cut: cached 44..59 (16 frames),
    # 4 evenly spaced starts over 0..9 -> 0, 3, 6, 9.
    clips, _ = build_clips(cache / "frames", cache / "labels", "test", params, eval_clips_per_video=4)
    assert clips == [Clip("b.mp4", s, "walk", 1.0) for s in (44, 47, 50, 53)]
    two, _ = build_clips(cache / "frames", cache / "labels", "test", params, eval_clips_per_video=2)
    assert [c.start for c in two] == [44, 53]
    assert build_clips(cache / "frames", cache / "labels", "val", params)[0] == []
    with_background = ClipParams(4, frame_stride=2, include_background=True)
    assert build_clips(cache / "frames", cache / "labels", "test", with_background)[1] == ["run", "walk", "background"]


def test_cached_range_of_a_stretch():
    index = list(range(0, 40, 2))  # 20 cached frames of 40 source frames
    assert cached_range(index, 40, Stretch("v", "train", 0, 39), 7) == (0, 20)
    assert cached_range(index, 40, Stretch("v", "train", 0, 19), 7) == (0, 6)  # cached 0..9, end cut: -4
    assert cached_range(index, 40, Stretch("v", "test", 20, 39), 7) == (14, 6)  # cached 10..19, start cut: +4
    assert cached_range(index, 40, Stretch("v", "val", 10, 29), 8) == (9, 2)  # cached 5..14, both cuts: 4 each
    assert cached_range(index, 40, Stretch("v", "val", 21, 21), 7) == (0, 0)  # no cached frame inside
    assert cached_range(index, 40, Stretch("v", "val", 16, 20), 9) == (13, 0)  # margins eat it all
    every = list(range(20))  # cuts one frame in from either end still take their margins
    assert cached_range(every, 20, Stretch("v", "val", 1, 18), 4) == (3, 14)


def test_samples_hold_the_window_frames_and_the_class_index(cache):
    params = ClipParams(3, frame_stride=2, offset=1)  # frames start + 1, 3, 5
    clips = [Clip("a.mp4", 2, "walk", 1.0), Clip("b.mp4", 0, "run", 1.0)]
    dataset = ClipDataset(cache / "frames", clips, ["run", "walk"], params, Augment(crop_size=SIZE), train=False)
    assert len(dataset) == 2
    x, y = dataset[0]
    assert y == 1 and x.shape == (3, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.equal(x[:, :, 0, 0], torch.tensor([[12.0, 20.0, 28.0]] * 3) / 255)
    assert torch.equal(x, x[:, :, :1, :1].expand_as(x))  # whole frames: no crop moved anything
    assert dataset[1][1] == 0
    dataset.as_uint8 = True
    packed, _ = dataset[0]
    assert packed.dtype == torch.uint8 and packed[:, :, 0, 0].tolist() == [[12, 20, 28]] * 3
    assert dataset.read_clip(clips[1]).shape == (3, SIZE, SIZE, 3) and dataset.read_clip(clips[1])[
        :, 0, 0, 0
    ].tolist() == [
        4,
        12,
        20,
    ]


def test_training_samples_crop_and_flip_the_same_frames(cache):
    params = ClipParams(2)
    clip = Clip("a.mp4", 5, "walk", 1.0)
    whole = Augment(crop_size=SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    dataset = ClipDataset(cache / "frames", [clip], ["run", "walk"], params, whole, train=True)
    x, y = dataset[0]
    assert y == 1 and x.shape == (3, 2, SIZE, SIZE)
    assert torch.equal(x, (torch.tensor([20.0, 24.0]) / 255)[None, :, None, None].expand_as(x))
    small = ClipDataset(cache / "frames", [clip], ["run", "walk"], params, Augment(crop_size=4), train=True)
    assert small[0][0].shape == (3, 2, 4, 4)


def test_to_unit_float():
    packed = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert (
        to_unit_float(packed).tolist() == pytest.approx([0.0, 0.2, 1.0])
        and to_unit_float(packed).dtype == torch.float32
    )
    floats = torch.rand(3)
    values = floats.tolist()
    assert to_unit_float(floats) is floats and floats.tolist() == values  # untouched, not divided in place


def _positions(h: int, w: int, frames: int = 2) -> torch.Tensor:
    """(3, frames, h, w): pixel (i, j) holds i * w + j, the same in every channel and frame."""
    return torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).expand(3, frames, h, w).clone()


def test_random_crops_are_windows_of_the_drawn_size_anywhere_in_the_frame():
    clip = _positions(8, 8)
    seen = set()
    for seed in range(300):  # a quarter of the area, square: a 4 x 4 window, no resize
        out = random_resized_crop(clip, 4, (0.25, 0.25), (1.0, 1.0), random.Random(seed))
        top, left = divmod(int(out[0, 0, 0, 0]), 8)
        assert torch.equal(out, clip[:, :, top : top + 4, left : left + 4])
        seen.add((top, left))
    assert seen == {(t, c) for t in range(5) for c in range(5)}  # every window position can be drawn


def test_random_crops_respect_the_aspect_ratio_and_fall_back_to_the_centre():
    clip = _positions(8, 16)
    for seed in range(20):  # half the area at aspect 4 (width / height): a 4 x 16 band
        out = random_resized_crop(clip, 6, (0.5, 0.5), (4.0, 4.0), random.Random(seed))
        bands = [resize_clip(clip[:, :, t : t + 4, :], (6, 6)) for t in range(5)]
        assert any(torch.equal(out, band) for band in bands)
    # no box of twice the frame's area exists: the centre square, resized
    out = random_resized_crop(clip, 8, (2.0, 2.0), (1.0, 1.0), random.Random(0))
    assert torch.equal(out, clip[:, :, :, 4:12])


def test_center_crop_resizes_the_short_side_then_cuts_the_middle():
    wide = torch.rand(3, 2, 30, 50)  # short side 30 -> 24: 24 x 40, columns 8..31
    assert torch.equal(center_crop(wide, 24), resize_clip(wide, (24, 40))[:, :, :, 8:32])
    tall = torch.rand(3, 2, 50, 30)
    assert torch.equal(center_crop(tall, 24), resize_clip(tall, (40, 24))[:, :, 8:32, :])
    odd = torch.rand(3, 1, 31, 50)  # 24 x 39 (rounded): columns 7..30
    assert torch.equal(center_crop(odd, 24), resize_clip(odd, (24, 39))[:, :, :, 7:31])
    small = _positions(6, 10)  # already 6 high: no resize
    assert torch.equal(center_crop(small, 6), small[:, :, :, 2:8])
    up = torch.rand(3, 1, 4, 6)  # smaller than the crop: scaled up, 8 x 12, columns 2..9
    assert torch.equal(center_crop(up, 8), resize_clip(up, (8, 12))[:, :, :, 2:10])


def test_resize_clip_resizes_each_frame_of_each_channel_alike():
    clip = torch.rand(3, 4, 12, 20)
    out = resize_clip(clip, (6, 9))
    assert out.shape == (3, 4, 6, 9)
    for c in range(3):
        for t in range(4):
            frame = F.interpolate(clip[c, t][None, None], size=(6, 9), mode="bilinear", antialias=True)[0, 0]
            assert torch.allclose(out[c, t], frame, atol=1e-6)
    assert resize_clip(clip, (12, 20)) is clip


def _windows(monkeypatch, clip, scale, ratio, seeds=200) -> list[torch.Tensor]:
    """The boxes ``random_resized_crop`` cuts, before its resize (made the identity here)."""
    import movinet.data.dataset as dataset

    monkeypatch.setattr(dataset, "resize_clip", lambda window, size: window)
    return [random_resized_crop(clip, 0, scale, ratio, random.Random(seed)) for seed in range(seeds)]


def test_random_crop_aspects_span_the_whole_ratio_range(monkeypatch):
    aspects = [w.shape[-1] / w.shape[-2] for w in _windows(monkeypatch, _positions(32, 32), (0.25, 0.25), (0.5, 2.0))]
    assert min(aspects) < 0.7 and max(aspects) > 1.4 and 0.9 < sorted(aspects)[len(aspects) // 2] < 1.1


def test_random_crops_down_to_one_pixel_and_up_to_the_full_side(monkeypatch):
    clip = _positions(2, 2)  # a quarter of 2 x 2: one pixel, any of the four
    windows = _windows(monkeypatch, clip, (0.25, 0.25), (1.0, 1.0), seeds=50)
    assert {w.shape[-2:] for w in windows} == {(1, 1)} and {int(w[0, 0, 0, 0]) for w in windows} == {0, 1, 2, 3}
    band = _positions(4, 8)  # half of 4 x 8, square: 4 x 4, the full height, at any column
    windows = _windows(monkeypatch, band, (0.5, 0.5), (1.0, 1.0), seeds=100)
    assert {w.shape[-2:] for w in windows} == {(4, 4)} and {int(w[0, 0, 0, 0]) for w in windows} == set(range(5))


@pytest.mark.parametrize("h,w,aspect", [(64, 4, 0.0005), (4, 64, 2000.0)], ids=["no width", "no height"])
def test_a_box_with_no_width_or_height_is_never_cut(monkeypatch, h, w, aspect):
    """A box that rounds to zero pixels on one side (the other fits) is refused; after ten refusals
    the fallback is the centre square."""
    (window,) = _windows(monkeypatch, _positions(h, w), (0.001, 0.001), (aspect, aspect), seeds=1)
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    assert torch.equal(window, _positions(h, w)[:, :, top : top + side, left : left + side])


def test_the_fallback_square_is_centred_on_a_tall_frame_too():
    clip = _positions(16, 8)  # no box of twice the area: rows 4..11
    assert torch.equal(random_resized_crop(clip, 8, (2.0, 2.0), (1.0, 1.0), random.Random(0)), clip[:, :, 4:12, :])


def test_the_cache_is_memory_mapped_once_per_video(cache):
    """Each loader worker maps a video's frames once and reads only the clip's pages (a large cache
    costs no memory up front)."""
    import numpy as np

    dataset = ClipDataset(
        cache / "frames", [Clip("b.mp4", 0, "run", 1.0)], ["run", "walk"], ClipParams(2), Augment(), False
    )
    frames = dataset.frames("b.mp4")
    assert isinstance(frames, np.memmap) and frames.shape == (60, SIZE, SIZE, 3)
    assert dataset.frames("b.mp4") is frames and dataset.frames("a.mp4") is not frames


def test_training_crops_follow_torch_s_seed(cache):
    """The random crop of a training sample is drawn from torch's generator: the same seed gives the
    same sample (a resumed or repeated run), another seed another one."""
    import numpy as np

    frames = {"b.mp4": np.random.default_rng(0).integers(0, 256, (60, SIZE, SIZE, 3), dtype=np.uint8)}
    write_frame_cache(cache / "noisy", {"b.mp4": (list(range(60)), 60)}, SIZE, frames)
    augment = Augment(crop_size=4, scale=(0.1, 0.5), hflip=True)
    dataset = ClipDataset(cache / "noisy", [Clip("b.mp4", 0, "run", 1.0)], ["run"], ClipParams(2), augment, train=True)
    samples = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        samples.append(dataset[0][0])
    assert torch.equal(samples[0], samples[1]) and not torch.equal(samples[0], samples[2])
