"""Video inference: the served path reads frames as training did, streams in constant memory, and
its last streamed frame equals the whole video as one clip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize, tiny_config, write_video
from movinet.data.clips import ClipParams, evenly_spaced_starts
from movinet.data.dataset import center_crop
from movinet.data.extract import extract_videos, load_index
from movinet.inference.predictor import Predictor
from movinet.inference.video_input import Preprocessing, VideoFrames
from movinet.models import build, save_checkpoint

CLASSES = ["a", "b", "c"]
PREP = Preprocessing(fps=10, size=40, crop_size=32, num_frames=4, frame_stride=2, clips_per_video=3)


def _video(path: Path, frames: int, seed: int = 0, fps: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_video(path, rng.integers(0, 255, (frames, 48, 64, 3), dtype=np.uint8), fps, "libx264")
    return path


def test_video_level_prediction_reads_frames_as_the_training_cache_does(tmp_path):
    video = _video(tmp_path / "v" / "clip.mp4", 60)
    model = randomize(build("a0", "base", 3))
    predictor = Predictor([model], CLASSES, PREP)
    got = predictor.predict(video)

    # The evaluation path: extraction cache at (fps, size), evenly spaced clips, center crop.
    extract_videos(tmp_path / "v", tmp_path / "cache", fps=PREP.fps, size=PREP.size, progress=False)
    entry = load_index(tmp_path / "cache")["videos"]["clip.mp4"]
    frames = np.load(tmp_path / "cache" / entry["file"])
    assert got.frames == len(frames) == 30 and got.fps == 10
    params = ClipParams(PREP.num_frames, PREP.frame_stride)
    clips = []
    for start in evenly_spaced_starts(len(frames), params, PREP.clips_per_video):
        x = torch.from_numpy(frames[params.frame_indices(start)]).permute(3, 0, 1, 2).float() / 255
        clips.append(center_crop(x, PREP.crop_size))
    with torch.no_grad():
        expected = torch.softmax(model(torch.stack(clips)), 1).mean(0).numpy()
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-5)
    assert got.label == CLASSES[int(expected.argmax())]
    assert [name for name, _ in got.top(2)] == [CLASSES[i] for i in np.argsort(-expected)[:2]]

    # The same video as an upload (bytes) gives the same answer.
    np.testing.assert_allclose(predictor.predict(video.read_bytes()).probabilities, got.probabilities, atol=1e-6)


def test_stream_timeline_last_frame_equals_the_whole_video_as_one_clip(tmp_path):
    video = _video(tmp_path / "clip.mp4", 50, seed=1)
    model = randomize(build("a0", "stream", 3), seed=3)
    got = Predictor([model], CLASSES, PREP).predict(video, per_frame=True)
    # One row per frame at the model's rate (every frame_stride-th cached frame).
    assert [r["frame"] for r in got.timeline] == list(range(0, 25, 2))
    assert got.timeline[3]["time"] == pytest.approx(0.6)
    with VideoFrames(video, PREP) as frames:
        whole = frames.clip(np.arange(0, len(frames), PREP.frame_stride))
    with torch.no_grad():
        expected = torch.softmax(model(whole[None]), 1)[0].numpy()
    np.testing.assert_allclose(got.timeline[-1]["probabilities"], expected, atol=1e-5)
    # A base model's timeline is sliding clips, half a clip apart, each row at its last frame.
    base = Predictor([randomize(build("a0", "base", 3))], CLASSES, PREP).predict(video, per_frame=True)
    assert [r["frame"] for r in base.timeline] == [6, 9, 12, 15, 18, 21, 24]


def test_a_video_shorter_than_the_ensemble_is_refused(tmp_path):
    a, b = build("a0", "base", 3), build("a0", "base", 3)
    predictor = Predictor([a, b], CLASSES, PREP, offsets=[0, 1], stride=2)
    with pytest.raises(ValueError, match="one.mp4: video too short"):
        predictor.predict(_video(tmp_path / "one.mp4", 1), name="one.mp4")
    assert predictor.predict(np.zeros((2, 48, 64, 3), np.uint8)).frames == 2  # one frame each is enough


def test_ensemble_predictor_gives_members_alternating_frames(tmp_path):
    video = _video(tmp_path / "clip.mp4", 40, seed=2)
    a, b = randomize(build("a0", "stream", 3), seed=1), randomize(build("a0", "stream", 3), seed=2)
    predictor = Predictor([a, b], CLASSES, PREP, offsets=[0, 1], stride=2)
    got = predictor.predict(video, per_frame=True)
    with VideoFrames(video, PREP) as frames:
        whole = frames.clip(np.arange(0, len(frames), PREP.frame_stride))[None]
    with torch.no_grad():
        expected = torch.softmax((a(whole[:, :, 0::2]) + b(whole[:, :, 1::2])) / 2, 1)[0].numpy()
    np.testing.assert_allclose(got.timeline[-1]["probabilities"], expected, atol=1e-5)
    assert got.timeline[0]["frame"] == 2  # the first row needs both members' first frame


def test_bad_videos_get_clear_errors(tmp_path, monkeypatch):
    import tempfile

    uploads = tmp_path / "uploads"  # this test's own temporary folder, not the machine's shared /tmp
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    predictor = Predictor([build("a0", "base", 3)], CLASSES, PREP)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        predictor.predict(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError, match="junk.mp4: cannot decode"):
        predictor.predict(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match="upload: cannot decode"):
        predictor.predict(b"garbage" * 50, name="upload")
    with pytest.raises(ValueError, match="empty"):
        predictor.predict(b"")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        predictor.predict(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        predictor.predict(np.zeros((4, 0, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \(n, H, W, 3\), got uint8 \(1, 0, 8, 3\)"):
        predictor.session().push(np.zeros((1, 0, 8, 3), np.uint8))  # a stream refuses frames with no pixels
    assert list(uploads.iterdir()) == []  # every upload's temporary file was removed


def test_an_upload_that_fails_to_open_leaves_no_temporary_file(tmp_path, monkeypatch):
    import tempfile

    import movinet.inference.video_input as video_input

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken_reader(*args, **kwargs):  # probe passes, the resized reader fails (as decord can)
        raise RuntimeError("DECORDError: cannot allocate")

    data = _video(tmp_path / "src" / "ok.mp4", 10).read_bytes()
    monkeypatch.setattr(video_input, "open_reader", broken_reader)
    with pytest.raises(ValueError, match="up.mp4: cannot open video .*DECORDError"):
        VideoFrames(data, PREP, name="up.mp4")
    assert not list(tmp_path.glob("*.video"))


GROWTH_SCRIPT = """
import json, sys
import numpy as np
import torch
from movinet.inference.predictor import Predictor, StreamSession
from movinet.inference.video_input import Preprocessing

class KeepsEveryFrame(StreamSession):
    \"\"\"The control: a session that holds on to each prepared frame (12 KB at 3 x 32 x 32 floats).\"\"\"
    kept_frames = []
    def push_prepared(self, chunk, first=None, step=1):
        self.kept_frames.append(chunk.clone())
        return super().push_prepared(chunk, first, step)

def rss_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))

torch.set_num_threads(1)  # a 32 x 32 step gains nothing from a second thread, and stays quick on a busy machine
predictor = Predictor.from_checkpoints([sys.argv[1]], Preprocessing(**json.loads(sys.argv[2])))
frames = np.random.default_rng(0).integers(0, 255, (50, 40, 40, 3), dtype=np.uint8)
out = {}
for name, session in (("session", predictor.session()), ("control", KeepsEveryFrame(predictor))):
    points = []
    for n in range(1, 2001):
        frame = frames[n % 50]
        if name == "control":
            from movinet.inference.video_input import prepare_frames
            session.push_prepared(prepare_frames(frame[None], predictor.prep))
        else:
            session.push(frame)
        if n % 200 == 0:
            points.append((n, rss_kb()))
    out[name] = points
print(json.dumps(out))
"""


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_video_length(tmp_path):
    """The slope of RSS against frames pushed, fitted over 200 -> 2000 frames, is ~0 (< 1 KB a frame).
    The same measurement on a session that keeps every frame (the control) shows its 12 KB a frame:
    the measure would catch a leak of that size."""
    model = randomize(build("a0", "stream", 3))
    ckpt = save_checkpoint(model, tmp_path / "model.pt", class_names=CLASSES)
    prep = Preprocessing(fps=None, size=None, crop_size=32, num_frames=4, frame_stride=1, clips_per_video=2)
    done = subprocess.run(
        [sys.executable, "-c", GROWTH_SCRIPT, str(ckpt), json.dumps(prep.to_dict())],
        capture_output=True,
        text=True,
        check=True,
    )
    curves = json.loads(done.stdout.strip().splitlines()[-1])
    slopes = {}
    for name, points in curves.items():
        frames, rss = np.array(points, dtype=float).T
        slopes[name] = np.polyfit(frames, rss * 1024, 1)[0]  # bytes per frame
    assert slopes["session"] < 1024, slopes
    assert slopes["control"] > 8 * 1024, slopes


@pytest.mark.slow
def test_device_option(tmp_path, monkeypatch):
    """--device cpu|cuda|auto: a missing GPU is a clear error, never a silent CPU run; auto falls back."""
    from movinet.models.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU is visible to torch here; use --device cpu"):
        resolve_device("cuda:1")
    video = _video(tmp_path / "clip.mp4", 30, seed=2)
    model = randomize(build("a0", "stream", 3), seed=4)
    on_cpu = Predictor([model], CLASSES, PREP).predict(video, per_frame=True)
    auto = Predictor([model], CLASSES, PREP, device="auto")
    assert auto.device == torch.device("cpu") and next(auto.members[0].parameters()).device.type == "cpu"
    again = auto.predict(video, per_frame=True)
    np.testing.assert_array_equal(again.probabilities, on_cpu.probabilities)
    assert [r["frame"] for r in again.timeline] == [r["frame"] for r in on_cpu.timeline]
    save_checkpoint(model, tmp_path / "m.pt", class_names=CLASSES, extra={"config": tiny_config()})
    cli = [sys.executable, "-m", "movinet.cli", "predict", str(video), "--model", str(tmp_path / "m.pt")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([*cli, "--device", "cuda"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "no CUDA GPU is visible" in done.stderr and "Traceback" not in done.stderr


def test_uploaded_videos_are_bounded_like_pushed_frames(tmp_path, monkeypatch):
    """An upload's frame size and length are checked from the container before decoding; the served
    model's base64 is checked against its size limit before it is decoded."""
    from movinet.inference import video_input
    from movinet.inference.video_input import read_video_arg

    thin = _video(tmp_path / "thin.mp4", 10)  # 64x48 is fine ...
    predictor = Predictor([randomize(build("a0", "stream", 3))], CLASSES, PREP)
    assert predictor.predict(thin.read_bytes()).frames == 5
    monkeypatch.setattr(video_input, "MAX_UPLOAD_FRAMES", 4)  # ... but not 5 frames when 4 is the limit
    with pytest.raises(ValueError, match="upload: 5 frames at the model's rate; uploads hold at most 4"):
        predictor.predict(thin.read_bytes())
    assert predictor.predict(thin).frames == 5  # a local file is the user's own: no upload limits
    monkeypatch.setattr(video_input, "MAX_UPLOAD_FRAMES", 36_000)
    wide = tmp_path / "wide.mp4"
    write_video(wide, np.zeros((4, 16, 400, 3), np.uint8), 10, "libx264")  # aspect 25
    with pytest.raises(ValueError, match="outside the limits"):
        predictor.predict(wide.read_bytes())
    with pytest.raises(ValueError, match="video larger than 1 MB"):
        read_video_arg("A" * (2 * 2**20), allow_paths=False, max_bytes=2**20)
