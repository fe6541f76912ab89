"""Frame extraction on real video files: exact frames, resampling, incremental runs, bad files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import frame_numbers, gray_frames, write_video
from movinet.data.clips import Clip, ClipParams
from movinet.data.dataset import Augment, ClipDataset
from movinet.data.extract import REPORT_FILE, ExtractionError, extract_videos, load_index
from movinet.data.video import list_videos, resample_indices

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"
CODECS = [("mp4", "libx264"), ("avi", "mpeg4"), ("webm", "libvpx")]


@pytest.fixture(scope="module")
def gray_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for ext, codec in CODECS:
        write_video(root / f"gray.{ext}", gray_frames(60), 30, codec)
    return root


def test_resample_indices_are_exact():
    assert resample_indices(10, 30.0, 10.0).tolist() == [0, 3, 6, 9]
    assert resample_indices(11, 25.0, 10.0).tolist() == [0, 2, 5, 7, 10]
    assert resample_indices(5, 15.0, 30.0).tolist() == [0, 1, 2, 3, 4]  # never upsample
    assert resample_indices(5, 29.97, None).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("ext", [e for e, _ in CODECS])
def test_decode_extract_index_round_trip(gray_videos, tmp_path, ext):
    out = tmp_path / "cache"
    report = extract_videos(gray_videos, out, fps=10, size=32, progress=False)
    assert sorted(report.extracted) == ["gray.avi", "gray.mp4", "gray.webm"]
    entry = load_index(out)["videos"][f"gray.{ext}"]
    assert entry["source_frames"] == 60 and entry["source_fps"] == pytest.approx(30.0)
    assert entry["source_index"] == list(range(0, 60, 3)) and entry["frames"] == 20
    assert (entry["height"], entry["width"]) == (32, 43)  # short side 32, aspect kept
    frames = np.load(out / entry["file"], mmap_mode="r")
    assert frames.shape == (20, 32, 43, 3) and frames.dtype == np.uint8
    assert frame_numbers(frames) == entry["source_index"]  # every cached frame is the right one

    params = ClipParams(num_frames=4, frame_stride=2, offset=1, discard_threshold=0.0)
    dataset = ClipDataset(out, [Clip(f"gray.{ext}", 3, "x", 1.0)], ["x"], params, Augment(), train=False)
    clip = dataset.read_clip(dataset.clips[0])
    # cached frames 4, 6, 8, 10 (start 3 + offset 1, stride 2) = source frames 12, 18, 24, 30
    assert frame_numbers(clip.numpy()) == [12, 18, 24, 30]


def test_rerun_does_no_work_and_touch_reextracts_only_that_video(gray_videos, tmp_path):
    out = tmp_path / "cache"
    extract_videos(gray_videos, out, size=32, progress=False)
    files = {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    again = extract_videos(gray_videos, out, size=32, progress=False)
    assert again.extracted == [] and len(again.unchanged) == 3
    assert {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()} == files

    video = gray_videos / "gray.avi"
    os.utime(video, ns=(time.time_ns(), time.time_ns()))
    touched = extract_videos(gray_videos, out, size=32, progress=False)
    assert touched.extracted == ["gray.avi"] and sorted(touched.unchanged) == ["gray.mp4", "gray.webm"]
    # Other parameters invalidate everything.
    resized = extract_videos(gray_videos, out, size=24, progress=False)
    assert len(resized.extracted) == 3


def test_bad_videos_are_skipped_and_reported(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "good.mp4", gray_frames(12), 24, "libx264")
    (videos / "corrupt.mp4").write_bytes(os.urandom(4096))
    (videos / "empty.avi").write_bytes(b"")
    out = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "extract", str(videos), str(out), "--size", "32"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["extracted"] == ["good.mp4"]
    assert sorted(s["file"] for s in report["skipped"]) == ["corrupt.mp4", "empty.avi"]
    assert all("cannot decode" in s["reason"] for s in report["skipped"])
    assert "skipped corrupt.mp4" in done.stderr
    assert list(load_index(out)["videos"]) == ["good.mp4"]
    assert [p.name for p in (out / "frames").iterdir() if p.name.endswith(".tmp")] == []

    strict = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "extract", str(videos), str(tmp_path / "strict"), "--strict"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert strict.returncode == 1 and "corrupt.mp4" in strict.stderr
    with pytest.raises(ExtractionError, match="empty.avi"):
        extract_videos(videos, tmp_path / "strict2", strict=True, progress=False)


KILL_ON_THIRD_VIDEO = """
import os, signal, sys
from movinet.data import extract

real_open, opened = extract.open_reader, []

def open_reader(path, **kwargs):
    reader, calls = real_open(path, **kwargs), []
    opened.append(path)

    class Reader:
        def get_batch(self, indices):
            calls.append(indices)
            if len(opened) == 3 and len(calls) == 2:  # the third video, its first batch written
                os.kill(os.getpid(), signal.SIGKILL)
            return reader.get_batch(indices)

    return Reader()

extract.open_reader = open_reader
extract.extract_videos(sys.argv[1], sys.argv[2], size=0, progress=False)
"""


def test_killed_extraction_resumes_into_a_complete_cache(tmp_path):
    """A real SIGKILL at a fixed point (in the third video, with its first batch in the temporary
    file), then a rerun: the two finished videos are kept, the rest extracted, nothing left over."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):
        write_video(videos / f"noise{i}.mp4", gray_frames(60, 48, 64), 25, "libx264")
    out = tmp_path / "cache"
    killed = subprocess.run([sys.executable, "-c", KILL_ON_THIRD_VIDEO, str(videos), str(out)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert [p.name for p in (out / "frames").iterdir() if p.name.endswith(".tmp")]  # the third, half-written
    partial = load_index(out)["videos"]
    assert sorted(partial) == ["noise0.mp4", "noise1.mp4"]
    report = extract_videos(videos, out, size=0, progress=False)
    assert sorted(report.unchanged) == sorted(partial)
    index = load_index(out)["videos"]
    assert sorted(index) == [f"noise{i}.mp4" for i in range(6)]
    for entry in index.values():
        frames = np.load(out / entry["file"], mmap_mode="r")
        assert frames.shape == (60, 48, 64, 3) and frame_numbers(frames) == list(range(60))
    assert sorted(p.name for p in (out / "frames").iterdir()) == sorted(Path(e["file"]).name for e in index.values())


def test_a_deleted_source_video_leaves_the_cache_with_its_frames(gray_videos, tmp_path):
    out = tmp_path / "cache"
    extract_videos(gray_videos, out, size=32, progress=False)
    gone = load_index(out)["videos"]["gray.avi"]["file"]
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("gray.mp4", "gray.webm"):  # the same folder less gray.avi
        os.link(gray_videos / name, kept / name)
    report = extract_videos(kept, out, size=32, progress=False)
    assert (
        report.removed == ["gray.avi"]
        and report.extracted == []
        and sorted(report.unchanged) == ["gray.mp4", "gray.webm"]
    )
    index = load_index(out)["videos"]
    assert sorted(index) == ["gray.mp4", "gray.webm"] and not (out / gone).exists()
    assert sorted(p.name for p in (out / "frames").iterdir()) == sorted(Path(e["file"]).name for e in index.values())
    assert json.loads((out / REPORT_FILE).read_text())["removed"] == ["gray.avi"]


def test_parallel_workers_give_the_same_cache(gray_videos, tmp_path):
    one = extract_videos(gray_videos, tmp_path / "one", size=32, progress=False)
    two = extract_videos(gray_videos, tmp_path / "two", size=32, workers=2, progress=False)
    assert sorted(one.extracted) == sorted(two.extracted)
    a, b = load_index(tmp_path / "one")["videos"], load_index(tmp_path / "two")["videos"]
    for rel in a:
        assert np.array_equal(np.load(tmp_path / "one" / a[rel]["file"]), np.load(tmp_path / "two" / b[rel]["file"]))


@pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason="../shared/videos is not beside the checkout")
def test_real_clips_from_shared(tmp_path):
    out = tmp_path / "cache"
    report = extract_videos(SHARED_VIDEOS, out, fps=5, size=48, workers=2, progress=False)
    assert report.skipped == []
    index = load_index(out)["videos"]
    assert set(index) == set(list_videos(SHARED_VIDEOS))
    expected_frames = {"demo.mp4": 280, "t_test.avi": 164, "demo_spatiotemporal_det.mp4": 57, "demo_skeleton.mp4": 72}
    for rel, frames in expected_frames.items():
        entry = index[rel]
        assert entry["source_frames"] == frames
        assert entry["source_index"] == resample_indices(frames, entry["source_fps"], 5).tolist()
        assert min(entry["height"], entry["width"]) == 48
    assert index["demo_skeleton.mp4"]["width"] == 85  # 1920x1080 -> 85x48


def test_a_full_disk_fails_the_extraction_instead_of_skipping_the_video(tmp_path, monkeypatch):
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", gray_frames(10, 32, 32), 10, "libx264")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    with pytest.raises(OSError, match="No space left on device"):
        extract_videos(tmp_path / "videos", tmp_path / "cache", size=0, progress=False)
    assert load_index(tmp_path / "cache")["videos"] == {}  # not recorded as extracted, nor as skipped
    assert list((tmp_path / "cache" / "frames").iterdir()) == []  # and no temporary file left
    cmd = [sys.executable, "-m", "movinet.cli", "extract", str(tmp_path / "nosuch"), str(tmp_path / "c")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: video folder") and "Traceback" not in done.stderr
