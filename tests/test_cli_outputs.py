"""What `movinet predict` and `movinet stream` print and write, parsed and compared number by number
with the predictor run in this process: JSON lines, the per-frame CSV, and a 15 fps stream piped
through stdin into a 10 fps model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import randomize, tiny_config, write_video
from movinet.inference.predictor import Predictor
from movinet.inference.stream_source import av_frames
from movinet.inference.video_input import Preprocessing
from movinet.models import build, save_checkpoint

CLASSES = ["left", "right", "still"]
CONFIG = tiny_config(
    "data.extract.fps=10",
    "data.extract.size=40",
    "data.transform.crop_size=32",
    "data.clips.num_frames=4",
    "data.clips.frame_stride=1",
    "data.clips.eval_clips_per_video=2",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A stream model's checkpoint and two videos: 30 frames at 15 fps (webm: streamable through a
    pipe) and 24 frames at 10 fps (mp4)."""
    folder = tmp_path_factory.mktemp("cli")
    model = save_checkpoint(
        randomize(build("a0", "stream", 3), seed=21), folder / "m.pt", class_names=CLASSES, extra={"config": CONFIG}
    )
    rng = np.random.default_rng(3)
    fast = folder / "fast.webm"
    write_video(fast, rng.integers(0, 255, (30, 48, 64, 3), dtype=np.uint8), 15, "libvpx")
    slow = folder / "slow.mp4"
    write_video(slow, rng.integers(0, 255, (24, 48, 64, 3), dtype=np.uint8), 10, "libx264")
    return model, fast, slow


def movinet(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "movinet.cli", *args], input=stdin, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done


def test_predict_json_lines_and_timeline_csv_equal_the_predictor(served, tmp_path):
    model, fast, slow = served
    out = tmp_path / "timeline.csv"
    done = movinet(
        "predict", str(fast), str(slow), "--model", str(model), "--json", "--top-k", "2", "--per-frame", str(out)
    )
    predictor = Predictor.from_checkpoints([model], Preprocessing.from_config(CONFIG))
    expected = [predictor.predict(v, per_frame=True) for v in (fast, slow)]
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [line["video"] for line in lines] == [str(fast), str(slow)]
    for line, want in zip(lines, expected):
        assert [name for name, _ in line["top"]] == [name for name, _ in want.top(2)]
        assert [p for _, p in line["top"]] == pytest.approx([p for _, p in want.top(2)], abs=1e-5)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video", "frame", "time", "label", "score", *CLASSES]
    want_rows = [(str(w.video), r) for w in expected for r in w.timeline]
    assert len(rows) == len(want_rows) == 20 + 24  # 30 frames at 15 fps are 20 at the model's 10
    for row, (video, want) in zip(rows, want_rows):
        assert (row["video"], int(row["frame"]), float(row["time"])) == (
            video,
            want["frame"],
            pytest.approx(want["time"]),
        )
        probabilities = [float(row[c]) for c in CLASSES]
        assert probabilities == pytest.approx(want["probabilities"].tolist(), abs=6e-5)
        assert row["label"] == CLASSES[int(np.argmax(want["probabilities"]))]


def _parse_stream(stdout: bytes) -> tuple[list[tuple[float, int, str, float]], tuple[int, str, float]]:
    """``  t.tts  frame N  label p`` lines, then ``final  frame N: label p``."""
    *lines, final = stdout.decode().splitlines()
    rows = []
    for line in lines:
        seconds, _, frame, label, score = line.split()
        rows.append((float(seconds.rstrip("s")), int(frame), label, float(score)))
    _, _, frame, label, score = final.split()
    return rows, (int(frame.rstrip(":")), label, float(score))


def test_stream_from_stdin_resamples_15_fps_to_the_models_10(served):
    model, fast, _ = served
    piped = movinet("stream", "-", "--model", str(model), "--every", "0.5", stdin=fast.read_bytes())
    from_file = movinet("stream", str(fast), "--no-realtime", "--model", str(model), "--every", "0.5")
    assert piped.stdout == from_file.stdout  # the same frames whether piped or read from the file

    predictor = Predictor.from_checkpoints([model], Preprocessing.from_config(CONFIG))
    fps, frames = av_frames(str(fast))
    assert fps == 15
    session = predictor.session(source_fps=fps)
    expected = [row for frame in frames for row in session.push(frame)]
    assert [f for f, _ in expected] == list(range(20))  # 30 source frames kept as 20 at 10 fps
    rows, final = _parse_stream(piped.stdout)
    assert final[0] == 19 and final[1] == CLASSES[int(expected[-1][1].argmax())]
    assert final[2] == pytest.approx(float(expected[-1][1].max()), abs=5e-4)
    by_frame = dict(expected)
    shown = [f for _, f, _, _ in rows]
    assert set(range(0, 20, 5)) <= set(shown)  # every 0.5 s at 10 fps, besides each change of label
    for seconds, frame, label, score in rows:
        assert seconds == pytest.approx(frame / 10, abs=5e-3)
        assert label == CLASSES[int(by_frame[frame].argmax())]
        assert score == pytest.approx(float(by_frame[frame].max()), abs=5e-4)


def test_stream_of_a_source_too_short_to_answer_is_an_error(served, tmp_path):
    model, _, _ = served
    empty = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "stream", "-", "--model", str(model)],
        input=b"",
        capture_output=True,
        timeout=120,
    )
    assert empty.returncode != 0 and "stdin" in empty.stderr.decode() and "Traceback" not in empty.stderr.decode()
    assert Path(model).is_file()
