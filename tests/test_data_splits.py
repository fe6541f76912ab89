"""Splits that never come out empty, on the shapes real small datasets have: whole videos where a
class has a video per split, cuts in time where it has not, and a refusal that names each class."""

from collections import Counter

import numpy as np
import pytest

from conftest import gray_frames, write_video
from movinet.data.clips import ClipParams
from movinet.data.dataset import build_clips
from movinet.data.extract import extract_videos
from movinet.data.ingest import ingest_labels, read_splits
from movinet.data.labels import Labels
from movinet.data.splits import SplitError, Stretch, assign_splits, by_time


def labels_for(classes: dict[str, int], pinned: dict[str, str] | None = None) -> tuple[Labels, dict[str, int]]:
    """Whole-video labels: ``classes`` maps a class to its number of videos (100 frames each)."""
    frames = {f"{c}{i}.mp4": dict.fromkeys(range(100), c) for c, n in classes.items() for i in range(n)}
    return Labels(frames, dict(pinned or {})), dict.fromkeys(frames, 100)


def per_split(stretches: list[Stretch], prefix: str) -> dict[str, int]:
    """Whole videos of a class per split."""
    return dict(Counter(s.split for s in stretches if s.video.startswith(prefix) and (s.start, s.end) == (0, 99)))


def cut(video: str) -> list[Stretch]:
    return [Stretch(video, "train", 0, 69), Stretch(video, "val", 70, 84), Stretch(video, "test", 85, 99)]


def test_one_video_per_class_is_cut_in_time():
    labels, lengths = labels_for({"a": 1, "b": 1, "c": 1})
    assert assign_splits(labels, lengths) == [*cut("a0.mp4"), *cut("b0.mp4"), *cut("c0.mp4")]


def test_two_videos_per_class_are_cut_in_time():
    labels, lengths = labels_for({"a": 2, "b": 2})
    assert assign_splits(labels, lengths) == [s for v in ("a0.mp4", "a1.mp4", "b0.mp4", "b1.mp4") for s in cut(v)]


def test_by_video_refuses_with_one_line_per_class():
    labels, lengths = labels_for({"a": 1, "b": 2, "c": 3})
    with pytest.raises(SplitError) as caught:
        assign_splits(labels, lengths, split_by="video")
    assert caught.value.problems == [
        "class 'a': 1 video(s) for 3 splits (train, val, test)",
        "class 'b': 2 video(s) for 3 splits (train, val, test)",
    ]
    assert "data.labels.split_by=time" in str(caught.value) and "`split` column" in str(caught.value)


def test_ten_videos_in_five_uneven_classes():
    labels, lengths = labels_for({"a": 4, "b": 3, "c": 1, "d": 1, "e": 1})
    stretches = assign_splits(labels, lengths, seed=0)
    assert per_split(stretches, "a") == {"train": 2, "val": 1, "test": 1}
    assert per_split(stretches, "b") == {"train": 1, "val": 1, "test": 1}
    assert [s for s in stretches if s.video[0] in "cde"] == [*cut("c0.mp4"), *cut("d0.mp4"), *cut("e0.mp4")]


def test_a_large_class_beside_a_small_one():
    labels, lengths = labels_for({"big": 40, "small": 2})
    stretches = assign_splits(labels, lengths, seed=1)
    assert per_split(stretches, "big") == {"train": 28, "val": 6, "test": 6}
    assert [s for s in stretches if s.video.startswith("small")] == [*cut("small0.mp4"), *cut("small1.mp4")]
    assert stretches == assign_splits(labels, lengths, seed=1)  # seeded
    assert stretches != assign_splits(labels, lengths, seed=2)


def test_pinned_splits_stay_and_count_for_their_class():
    # a0 pinned to test: a1 and a2 fill train and val by video; b's two videos are pinned to train
    # and val, so its third (unpinned) video must go to test.
    labels, lengths = labels_for({"a": 3, "b": 3}, {"a0.mp4": "test", "b0.mp4": "train", "b1.mp4": "val"})
    stretches = assign_splits(labels, lengths, seed=0, split_by="video")
    split_of = {s.video: s.split for s in stretches}
    assert (split_of["a0.mp4"], split_of["b0.mp4"], split_of["b1.mp4"], split_of["b2.mp4"]) == (
        "test",
        "train",
        "val",
        "test",
    )
    assert {split_of["a1.mp4"], split_of["a2.mp4"]} == {"train", "val"}
    assert all((s.start, s.end) == (0, 99) for s in stretches)


def test_a_split_meant_to_be_empty_and_one_that_would_be():
    labels, lengths = labels_for({"a": 3})
    stretches = assign_splits(labels, lengths, fractions=(0.8, 0.0, 0.2), split_by="video")
    assert per_split(stretches, "a") == {"train": 2, "test": 1}  # no val: asked for
    labels, lengths = labels_for({"a": 3}, {"a0.mp4": "train", "a1.mp4": "train", "a2.mp4": "train"})
    with pytest.raises(SplitError, match="the val split would be empty"):
        assign_splits(labels, lengths)


def test_time_cuts_follow_the_fractions():
    assert by_time("v", 20, (0.5, 0.25, 0.25)) == [
        Stretch("v", "train", 0, 9),
        Stretch("v", "val", 10, 14),
        Stretch("v", "test", 15, 19),
    ]
    assert by_time("v", 2, (0.7, 0.15, 0.15)) == [Stretch("v", "train", 0, 0), Stretch("v", "val", 1, 1)]


@pytest.fixture()
def one_video(tmp_path):
    """One real 100-frame video, labelled whole, cached at its own 10 fps."""
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "v.mp4", gray_frames(100, 32, 32, step=2), 10, "libx264")
    (tmp_path / "labels.csv").write_text("filename,label\nv.mp4,wave\n")
    extract_videos(tmp_path / "videos", tmp_path / "frames", size=0, progress=False)
    return tmp_path


def test_clips_of_a_video_cut_in_time_stay_a_span_apart(one_video):
    params = ClipParams(num_frames=4, frame_stride=1)
    ingest_labels(one_video / "labels.csv", one_video / "frames", one_video / "labels", clips=params)
    assert read_splits(one_video / "labels") == cut("v.mp4")
    frames = {}
    for split in ("train", "val", "test"):
        clips, _ = build_clips(one_video / "frames", one_video / "labels", split, params, eval_clips_per_video=100)
        frames[split] = sorted({int(f) for c in clips for f in params.frame_indices(c.start)})
    # train 0..69 less 2 frames (half the span of 4) at its cut; val 70..84 less 2 at each end; test 85..99
    assert frames == {"train": list(range(0, 68)), "val": list(range(72, 83)), "test": list(range(87, 100))}


def test_ingest_refuses_a_split_without_clips_and_writes_nothing(one_video):
    params = ClipParams(num_frames=8, frame_stride=2)  # a span of 15 fits neither val nor test less their margins
    with pytest.raises(
        ValueError, match=r"the val and test splits would have no clip of 8 frames 2 apart .*fixes: shorter"
    ):
        ingest_labels(one_video / "labels.csv", one_video / "frames", one_video / "labels", clips=params)
    assert not (one_video / "labels").exists() and list(one_video.glob(".labels*")) == []
    assert np.load(next((one_video / "frames" / "frames").glob("*.npy"))).shape[0] == 100


def test_training_needs_a_val_split_unless_it_monitors_a_training_metric(tmp_path, monkeypatch):
    from conftest import tiny_config
    from movinet.config import to_config
    from movinet.training.run import run_training

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        write_video(videos / f"v{i}.mp4", gray_frames(40, 32, 32), 10, "libx264")
    (tmp_path / "labels.csv").write_text("filename,label\n" + "".join(f"v{i}.mp4,{'ab'[i % 2]}\n" for i in range(4)))
    extract_videos(videos, tmp_path / "frames", size=0, progress=False)
    ingest_labels(tmp_path / "labels.csv", tmp_path / "frames", tmp_path / "labels", fractions=(0.8, 0.0, 0.2))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    paths = [f"data.extract.out_dir={tmp_path / 'frames'}", f"data.labels.out_dir={tmp_path / 'labels'}"]
    cfg = to_config(tiny_config(*paths))
    with pytest.raises(ValueError, match="the val split has no clips, so val_acc cannot choose the best checkpoint"):
        run_training(cfg, tmp_path / "run", tmp_path)
    cfg = to_config(tiny_config(*paths, "train.monitor=train_loss", "train.monitor_mode=min"))
    result = run_training(cfg, tmp_path / "run", tmp_path)
    assert (tmp_path / "run" / "model.pt").is_file() and result["score"] == result["score"]  # trained, not NaN
