"""Clip index: majority labels, the discard threshold, offsets; datasets and the ingest stage."""

import csv
import os

import pytest
import torch

from conftest import frame_numbers, gray_frames, write_video
from movinet.data.clips import ClipParams, candidate_starts, evenly_spaced_starts, index_clips, label_clip
from movinet.data.datamodule import ClipDataModule, auto_workers
from movinet.data.dataset import Augment, ClipDataset, build_clips, center_crop, to_unit_float
from movinet.data.extract import extract_videos
from movinet.data.ingest import ingest_labels, read_splits


def _constructed_video():
    """Three 10-frame clips (stride 1, T=10) whose majority shares are 30 %, 60 % and 100 %."""
    a = ["walk"] * 3 + [None] * 7  # 30 %: unlabelled frames count against it
    b = ["run"] * 6 + ["walk"] * 4  # 60 %
    c = ["jump"] * 10  # 100 %
    return a + b + c


@pytest.mark.parametrize("threshold,kept", [(0.0, [0, 10, 20]), (0.5, [10, 20]), (0.9, [20])])
def test_discard_threshold(threshold, kept):
    params = ClipParams(num_frames=10, discard_threshold=threshold)
    clips = index_clips("v", _constructed_video(), params, [0, 10, 20])
    assert [c.start for c in clips] == kept
    shares = {c.start: c.share for c in clips}
    assert shares.get(10, 0.6) == pytest.approx(0.6) and shares[20] == 1.0


def test_majority_label_offset_and_stride():
    labels = ["a", "b"] * 10  # even frames a, odd frames b
    assert label_clip(labels, ClipParams(4, frame_stride=2, offset=0), 0) == ("a", 1.0)
    assert label_clip(labels, ClipParams(4, frame_stride=2, offset=1), 0) == ("b", 1.0)
    params = ClipParams(4, frame_stride=3, offset=1)
    assert params.frame_indices(5).tolist() == [6, 9, 12, 15]
    assert list(candidate_starts(20, params)) == list(range(0, 10))  # span 11
    assert evenly_spaced_starts(20, params, 4) == [0, 3, 6, 9]


def test_background_clips_only_when_configured():
    labels = ["background"] * 8
    assert index_clips("v", labels, ClipParams(4), [0]) == []
    later = ["background"] * 4 + ["wave"] * 4  # a background window first, then a class's
    assert [(c.start, c.label) for c in index_clips("v", later, ClipParams(4), [0, 4])] == [(4, "wave")]
    assert [c.label for c in index_clips("v", labels, ClipParams(4, include_background=True), [0])] == ["background"]


def test_transforms_shapes_and_ranges():
    clip = torch.rand(3, 4, 30, 50)
    out = center_crop(clip, 24)
    assert out.shape == (3, 4, 24, 24)
    assert torch.equal(out, center_crop(clip, 24))


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory):
    """Real videos → extraction → ingestion, the way the DVC stages run them."""
    root = tmp_path_factory.mktemp("pipe")
    videos = root / "videos"
    videos.mkdir()
    rows = []
    for i in range(12):
        label = ("wave", "clap", "nod")[i % 3]
        write_video(videos / f"v{i:02d}.mp4", gray_frames(40, 40, 56), 20, "libx264")
        rows.append((f"v{i:02d}.mp4", "", "", label))
    rows.append(("v00.mp4", "30", "", "background"))  # conflicts with the whole-video label: skipped
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "frame", "timestamp", "label"])
        writer.writerows(rows)
    extract_videos(videos, root / "frames", fps=10, size=32, progress=False)
    summary = ingest_labels(root / "labels.csv", root / "frames", root / "labels", on_error="skip", seed=1)
    return root, summary


def test_ingest_stage_outputs(pipeline_dirs):
    root, summary = pipeline_dirs
    assert summary["classes"] == ["clap", "nod", "wave"]
    assert sum(summary["videos_per_split"].values()) == 12
    splits = {s.video: s.split for s in read_splits(root / "labels")}
    assert summary["videos_per_split"] == {"train": 6, "val": 3, "test": 3}  # 4 videos a class: 2, 1, 1
    assert len(splits) == 12 and summary["videos_split_in_time"] == []
    report = (root / "labels" / "ingest_report.json").read_text()
    assert "conflicting labels on frame 30" in report
    assert not (root / ".labels.tmp").exists()


def test_datasets_from_the_cache(pipeline_dirs):
    root, _ = pipeline_dirs
    params = ClipParams(num_frames=4, frame_stride=2, discard_threshold=0.5)
    clips, classes = build_clips(root / "frames", root / "labels", "train", params, train_hop=3)
    assert classes == ["clap", "nod", "wave"]
    splits = {s.video: s.split for s in read_splits(root / "labels")}
    assert clips and all(splits[c.video] == "train" for c in clips)
    assert [c.start for c in clips if c.video == clips[0].video] == [0, 3, 6, 9, 12]  # 20 frames, span 7
    dataset = ClipDataset(root / "frames", clips, classes, params, Augment(crop_size=24), train=True)
    x, y = dataset[0]
    assert x.shape == (3, 4, 24, 24) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert classes[y] == clips[0].label
    # the frames are the right ones: cached frames 0, 2, 4, 6 at 10 fps = source frames 0, 4, 8, 12
    assert frame_numbers(dataset.read_clip(clips[0]).numpy()) == [0, 4, 8, 12]

    module = ClipDataModule(root / "frames", root / "labels", params, Augment(crop_size=24), batch_size=2)
    module.setup()
    batch, labels = next(iter(module.val_dataloader()))
    assert batch.shape[1:] == (3, 4, 24, 24) and labels.dtype == torch.int64
    a, _ = module.datasets["val"][0]
    b, _ = module.datasets["val"][0]
    assert torch.equal(a, b)  # evaluation is deterministic


def test_uint8_batches_carry_the_same_clips_at_a_quarter_of_the_bytes(pipeline_dirs):
    """On a GPU batches travel as uint8 and are scaled back on the device: the same clip to 0.5/255."""
    root, _ = pipeline_dirs
    params = ClipParams(num_frames=4, frame_stride=2, discard_threshold=0.5)
    module = ClipDataModule(root / "frames", root / "labels", params, Augment(crop_size=20), uint8_batches=True)
    module.setup()
    packed, labels = next(iter(module.val_dataloader()))
    module.uint8_batches = False
    floats, same_labels = next(iter(module.val_dataloader()))
    assert packed.dtype == torch.uint8 and floats.dtype == torch.float32 and torch.equal(labels, same_labels)
    assert packed.element_size() * 4 == floats.element_size()
    unpacked = to_unit_float(packed)
    assert unpacked.dtype == torch.float32
    assert (unpacked - floats).abs().max() <= 0.5 / 255 + 1e-7
    assert torch.equal(packed, (floats * 255).round().to(torch.uint8))
    assert to_unit_float(floats) is floats  # float batches (the CPU default) pass through


def test_loader_defaults_follow_the_device(pipeline_dirs, monkeypatch):
    root, _ = pipeline_dirs
    params = ClipParams(num_frames=4)
    module = ClipDataModule(root / "frames", root / "labels", params, Augment(crop_size=20), num_workers="auto")
    module.setup()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loader = module.val_dataloader()
    assert not loader.pin_memory and not module.datasets["val"].as_uint8
    assert loader.num_workers == auto_workers() == max(0, min(len(os.sched_getaffinity(0)) - 1, 16))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = module.val_dataloader()
    assert loader.pin_memory and module.datasets["val"].as_uint8
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert auto_workers() == 15 and auto_workers(processes_per_machine=4) == 3 and auto_workers(32) == 0


def test_flip_only_where_the_class_allows_it(pipeline_dirs):
    root, _ = pipeline_dirs
    params = ClipParams(num_frames=2, frame_stride=1, discard_threshold=0.5)
    clips, classes = build_clips(root / "frames", root / "labels", "train", params, train_hop=50)
    clip = clips[0]
    frames = torch.rand(3, 2, 24, 24)

    class Fixed(ClipDataset):
        def read_clip(self, _clip):
            return (frames.permute(1, 2, 3, 0) * 255).to(torch.uint8)

    expected = (frames * 255).to(torch.uint8).float() / 255

    def outcomes(augment):
        seen = set()
        for _ in range(20):
            x, _ = Fixed(root / "frames", [clip], classes, params, augment, train=True)[0]
            if torch.allclose(x, expected):
                seen.add("kept")
            elif torch.allclose(x, expected.flip(-1)):
                seen.add("flipped")
            else:
                raise AssertionError("the full-frame crop changed the clip")
        return seen

    torch.manual_seed(0)
    full = Augment(crop_size=24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True)
    assert outcomes(full) == {"kept", "flipped"}
    blocked = Augment(crop_size=24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True, no_flip=(clip.label,))
    assert outcomes(blocked) == {"kept"}


def test_center_crop_takes_the_centre_and_random_crops_move():
    """Evaluation sees the middle of the frame; training crops vary in place and size."""
    import random

    from movinet.data.dataset import random_resized_crop

    h, w = 6, 10
    positions = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).expand(3, 2, h, w)
    crop = center_crop(positions, 6)  # short side already 6: no resize, columns 2..7
    assert torch.equal(crop, positions[:, :, :, 2:8])
    boxes = set()
    for seed in range(20):
        out = random_resized_crop(positions, 4, (0.2, 0.6), (3 / 4, 4 / 3), random.Random(seed))
        assert out.shape == (3, 2, 4, 4) and torch.equal(out[:, 0], out[:, 1])  # one box for every frame
        boxes.add(tuple(out[0, 0].flatten().tolist()))
    assert len(boxes) >= 10  # the boxes differ from draw to draw


def test_clip_params_from_the_composed_config():
    from conftest import tiny_config
    from movinet.config import to_config

    cfg = to_config(
        tiny_config(
            "data.clips.num_frames=6",
            "data.clips.frame_stride=3",
            "data.clips.discard_threshold=0.25",
            "data.clips.offset=1",
            "data.clips.include_background=true",
        )
    )
    assert ClipParams.from_config(cfg) == ClipParams(6, 3, 0.25, 1, True)
    assert ClipParams.from_config(cfg).span == 1 + 5 * 3 + 1
    baseline = to_config(tiny_config("model=frame_baseline", "data.clips.num_frames=6"))
    assert ClipParams.from_config(baseline).num_frames == 1  # the single-frame model fixes T = 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 0},
        {"num_frames": 2, "frame_stride": 0},
        {"num_frames": 2, "offset": -1},
        {"num_frames": 2, "discard_threshold": -0.01},
        {"num_frames": 2, "discard_threshold": 1.01},
    ],
)
def test_clip_params_refuse_impossible_values(kwargs):
    with pytest.raises(ValueError, match="invalid clip parameters|discard_threshold must be in"):
        ClipParams(**kwargs)


def test_clip_params_accept_the_boundaries():
    for kwargs in (
        {"num_frames": 1},
        {"num_frames": 1, "discard_threshold": 0.0},
        {"num_frames": 1, "discard_threshold": 1.0},
    ):
        assert ClipParams(**kwargs).span == 1
    assert ClipParams(1, frame_stride=1, offset=0).frame_indices(7).tolist() == [7]


def test_a_share_equal_to_the_threshold_is_kept():
    labels = ["a", "a", None, None]  # share 0.5
    assert [c.share for c in index_clips("v", labels, ClipParams(4, discard_threshold=0.5), [0])] == [0.5]
    assert index_clips("v", labels, ClipParams(4, discard_threshold=0.51), [0]) == []
    assert index_clips("v", [None] * 4, ClipParams(4, discard_threshold=0.0), [0]) == []  # no labelled frame


def test_ties_go_to_the_first_label_in_sorted_order():
    assert label_clip(["b", "a", "b", "a"], ClipParams(4), 0) == ("a", 0.5)
    assert label_clip(["b", "b", "a", None], ClipParams(4), 0) == ("b", 0.5)


def test_window_starts_at_the_edges():
    params = ClipParams(4, frame_stride=2)  # span 7
    assert list(candidate_starts(7, params)) == [0]
    assert list(candidate_starts(6, params)) == []
    assert list(candidate_starts(10, params)) == [0, 1, 2, 3]
    assert evenly_spaced_starts(6, params, 4) == []  # shorter than one clip
    assert evenly_spaced_starts(7, params, 4) == [0]  # exactly one clip
    assert evenly_spaced_starts(11, params, 1) == [2]  # one clip: the middle one
    assert evenly_spaced_starts(10, params, 1) == [1] and isinstance(evenly_spaced_starts(10, params, 1)[0], int)
    assert evenly_spaced_starts(8, params, 4) == [0, 1]  # two starts to choose from
    assert evenly_spaced_starts(11, params, 3) == [0, 2, 4]
    assert evenly_spaced_starts(9, params, 4) == [0, 1, 2]  # fewer distinct starts than asked
    assert evenly_spaced_starts(107, params, 4) == [0, 33, 67, 100]


def test_cached_labels_follow_the_source_frames():
    from movinet.data.clips import cached_labels

    assert cached_labels([0, 2, 4, 6], {0: "a", 4: "b", 5: "c"}) == ["a", None, "b", None]


def test_index_clips_records_video_start_label_and_share():
    from movinet.data.clips import Clip

    labels = ["a"] * 3 + ["b"] * 5
    clips = index_clips("dir/v.mp4", labels, ClipParams(4, discard_threshold=0.7), [0, 2, 4])
    assert clips == [Clip("dir/v.mp4", 0, "a", 0.75), Clip("dir/v.mp4", 2, "b", 0.75), Clip("dir/v.mp4", 4, "b", 1.0)]
