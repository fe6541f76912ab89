"""The predictor's numbers against an independent path, on decoded frames (no files): a base model's
timeline is the model on each sliding clip, a video's answer the mean softmax of its evenly spaced
clips, a live stream at a higher frame rate sees exactly the frames the extraction would keep."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from conftest import randomize
from movinet.data.video import resample_indices
from movinet.inference.predictor import Prediction, Predictor, top_classes
from movinet.inference.video_input import Preprocessing, prepare_frames
from movinet.models import build, save_checkpoint

CLASSES = ["a", "b", "c"]
# Frames already at the cache's size and rate: 40 x 40 -> center crop 32; clips of 4 frames 2 apart (span 7).
PREP = Preprocessing(fps=10, size=40, crop_size=32, num_frames=4, frame_stride=2, clips_per_video=3)


def _frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 40, 40, 3), dtype=np.uint8)


def _softmax(model, clip: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(clip[None]), 1)[0].numpy()


def test_a_base_model_timeline_is_the_model_on_each_sliding_clip():
    frames = _frames(16)
    model = randomize(build("a0", "base", 3), seed=5)
    got = Predictor([model], CLASSES, PREP).predict(frames, per_frame=True)
    x = prepare_frames(frames, PREP)
    # rows every half span (3 frames) from the first full span: clips ending at frames 6, 9, 12, 15
    assert [r["frame"] for r in got.timeline] == [6, 9, 12, 15]
    assert [r["time"] for r in got.timeline] == pytest.approx([0.6, 0.9, 1.2, 1.5])
    for row in got.timeline:
        end = row["frame"]
        expected = _softmax(model, x[:, end - 6 : end + 1 : 2])
        np.testing.assert_allclose(row["probabilities"], expected, atol=1e-5)
    assert len({tuple(np.round(r["probabilities"], 6)) for r in got.timeline}) == 4  # the clips differ


def test_a_video_answer_is_the_mean_softmax_of_its_evenly_spaced_clips():
    frames = _frames(20, seed=1)
    model = randomize(build("a0", "base", 3), seed=6)
    got = Predictor([model], CLASSES, PREP).predict(frames, name="upload.mp4")
    x = prepare_frames(frames, PREP)
    # 20 frames, span 7: starts 0..13, three evenly spaced: 0, 6 (6.5 rounds to even), 13
    clips = [x[:, s : s + 7 : 2] for s in (0, 6, 13)]
    expected = np.mean([_softmax(model, c) for c in clips], axis=0)
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-5)
    assert got.video == "upload.mp4" and got.frames == 20 and got.fps == 10 and got.timeline == []
    assert got.label == CLASSES[int(expected.argmax())]


def test_a_video_shorter_than_a_clip_is_one_clip_of_what_there_is():
    frames = _frames(5, seed=2)
    model = randomize(build("a0", "base", 3), seed=7)
    got = Predictor([model], CLASSES, PREP).predict(frames)
    x = prepare_frames(frames, PREP)
    np.testing.assert_allclose(got.probabilities, _softmax(model, x[:, 0:5:2]), atol=1e-5)  # frames 0, 2, 4


def test_a_stream_timeline_has_a_row_per_model_frame_equal_to_the_clip_so_far():
    frames = _frames(9, seed=3)
    model = randomize(build("a0", "stream", 3), seed=8)
    got = Predictor([model], CLASSES, PREP).predict(frames, per_frame=True)
    x = prepare_frames(frames, PREP)
    assert [r["frame"] for r in got.timeline] == [0, 2, 4, 6, 8]
    for row in got.timeline:
        expected = _softmax(model, x[:, : row["frame"] + 1 : 2])
        np.testing.assert_allclose(row["probabilities"], expected, atol=1e-5)


@pytest.mark.parametrize("source_fps,chunks", [(30.0, [1] * 30), (30.0, [7, 1, 13, 9]), (15.0, [4, 11, 5, 10])])
def test_a_live_stream_keeps_the_frames_the_extraction_keeps(source_fps, chunks):
    """A camera at ``source_fps`` into a 10 fps model: the session resamples as the extraction
    cache does (``resample_indices``), however the frames are split into pushes."""
    model = randomize(build("a0", "stream", 3), seed=9)
    predictor = Predictor([model], CLASSES, PREP)
    total = sum(chunks)
    frames = _frames(total, seed=4)
    session = predictor.session(source_fps=source_fps)
    rows, at = [], 0
    for n in chunks:
        rows += session.push(frames[at : at + n])
        at += n
    kept = resample_indices(total, source_fps, PREP.fps)
    assert session.received == total and session.kept == len(kept)
    reference = predictor.session()  # the kept frames pushed at the model's rate
    expected = reference.push(frames[kept])
    assert [f for f, _ in rows] == [f for f, _ in expected] == list(range(0, len(kept), 2))
    for (_, got), (_, want) in zip(rows, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert session.last[0] == rows[-1][0]


def test_a_slower_camera_keeps_every_frame():
    predictor = Predictor([randomize(build("a0", "stream", 3), seed=9)], CLASSES, PREP)
    session = predictor.session(source_fps=6.0)  # below the model's 10 fps: nothing to drop
    rows = session.push(_frames(5, seed=5))
    assert session.kept == 5 and [f for f, _ in rows] == [0, 2, 4]
    assert predictor.session(source_fps=None).push(_frames(1))[0][0] == 0


def test_a_base_model_session_answers_every_half_span_with_the_last_clip():
    frames = _frames(13, seed=6)
    model = randomize(build("a0", "base", 3), seed=10)
    session = Predictor([model], CLASSES, PREP).session()
    rows = [row for i in range(13) for row in session.push(frames[i])]
    x = prepare_frames(frames, PREP)
    assert [f for f, _ in rows] == [6, 9, 12]
    for end, probabilities in rows:
        np.testing.assert_allclose(probabilities, _softmax(model, x[:, end - 6 : end + 1 : 2]), atol=1e-5)


def test_an_ensemble_session_answers_once_both_members_have_a_frame():
    frames = _frames(8, seed=7)
    a, b = randomize(build("a0", "stream", 3), seed=11), randomize(build("a0", "stream", 3), seed=12)
    predictor = Predictor([a, b], CLASSES, PREP, offsets=[0, 1], stride=2)
    rows = predictor.session().push(frames)
    x = prepare_frames(frames, PREP)[:, ::2][None]  # the model-rate frames 0, 2, 4, 6
    assert [f for f, _ in rows] == [2, 4, 6]
    with torch.no_grad():
        for (frame, probabilities), n in zip(rows, (2, 3, 4)):
            seen = x[:, :, :n]
            expected = torch.softmax((a(seen[:, :, 0::2]) + b(seen[:, :, 1::2])) / 2, 1)[0].numpy()
            np.testing.assert_allclose(probabilities, expected, atol=1e-5, err_msg=str(frame))


def test_a_mismatched_head_and_class_list_is_refused():
    with pytest.raises(ValueError, match="the model predicts 3 classes, 2 class names given"):
        Predictor([build("a0", "base", 3)], ["a", "b"], PREP)


def test_top_classes_best_first_ties_in_class_order():
    probabilities = np.array([0.2, 0.5, 0.2, 0.1])
    assert top_classes(probabilities, ["w", "x", "y", "z"], 3) == [("x", 0.5), ("w", 0.2), ("y", 0.2)]
    prediction = Prediction("v", probabilities, ["w", "x", "y", "z"], 4, 10.0)
    assert prediction.label == "x" and prediction.top(1) == [("x", 0.5)] and len(prediction.top()) == 4


def test_ties_among_many_classes_stay_in_class_order():
    """With ties among a hundred classes the order is the classes' own (a plain quicksort would not keep it)."""
    probabilities = np.random.default_rng(0).integers(0, 3, 100) / 10
    names = [f"c{i}" for i in range(100)]
    best = [i for i in range(100) if probabilities[i] == probabilities.max()][:5]
    assert top_classes(probabilities, names, 5) == [(names[i], probabilities.max()) for i in best]
    assert len(Prediction("v", probabilities, names, 4, 10.0).top()) == 5  # five by default


def test_a_two_frame_base_model_answers_at_every_frame_once_its_clip_is_full():
    """Span 2 (half a span rounds to 1): a row at every frame from the second, each the model on the
    last two frames."""
    prep = Preprocessing(fps=10, size=40, crop_size=32, num_frames=2, frame_stride=1, clips_per_video=1)
    model = randomize(build("a0", "base", 3), seed=13)
    frames = _frames(5, seed=8)
    rows = Predictor([model], CLASSES, prep).session().push(frames)
    x = prepare_frames(frames, prep)
    assert [f for f, _ in rows] == [1, 2, 3, 4]
    for end, probabilities in rows:
        np.testing.assert_allclose(probabilities, _softmax(model, x[:, end - 1 : end + 1]), atol=1e-5)


def test_checkpoints_load_into_one_predictor_only_with_the_same_class_names(tmp_path):
    a, b = randomize(build("a0", "stream", 3), seed=14), randomize(build("a0", "stream", 3), seed=15)
    save_checkpoint(a, tmp_path / "a.pt", class_names=CLASSES)
    save_checkpoint(b, tmp_path / "b.pt", class_names=["a", "b", "z"])
    save_checkpoint(b, tmp_path / "none.pt")
    predictor = Predictor.from_checkpoints([tmp_path / "a.pt"], PREP)
    assert predictor.class_names == CLASSES and predictor.stride == 1 and predictor.offsets == [0]
    assert predictor.device == torch.device("cpu")
    for paths in (["a.pt", "b.pt"], ["none.pt"]):
        with pytest.raises(ValueError, match="^the checkpoints must carry the same class names$"):
            Predictor.from_checkpoints([tmp_path / p for p in paths], PREP)


def test_the_stream_batcher_shares_the_callers_lock_and_batches_of_one_take_the_fast_steps():
    predictor = Predictor([randomize(build("a0", "stream", 3), seed=16)], CLASSES, PREP)
    lock = threading.Lock()
    batcher = predictor.stream_batcher(lock)
    assert batcher.lock is lock and batcher.device == predictor.device and batcher.image_size == PREP.crop_size
    assert batcher.max_batch == 8 and batcher.max_wait == pytest.approx(0.003)
    assert batcher.batch_one() is predictor._stream_models(PREP.crop_size)
    assert Predictor([build("a0", "base", 3)], CLASSES, PREP).stream_batcher() is None


def test_a_session_has_no_answer_before_its_first_row():
    session = Predictor([randomize(build("a0", "stream", 3), seed=17)], CLASSES, PREP).session()
    assert session.last is None
    session.push(_frames(1))
    assert session.last[0] == 0


@pytest.mark.parametrize("variant,count,updates", [("stream", 70, [64, 6]), ("base", 40, [32, 8])])
def test_per_frame_prediction_counts_the_video_s_frames_on_a_progress_bar(monkeypatch, variant, count, updates):
    """With ``progress``, a bar named after the video counts its frames, decode batch by batch (32
    frames at the model's rate), to the total, and is cleared at the end. A stream model reads every
    other frame here: the count is still the video's."""
    import tqdm

    bars = []

    class Bar:
        def __init__(self, **options) -> None:
            self.options, self.updates, self.closed = options, [], False
            bars.append(self)

        @property
        def n(self) -> int:
            return sum(self.updates)

        def update(self, n: int) -> None:
            self.updates.append(n)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    prep = Preprocessing(fps=10, size=20, crop_size=16, num_frames=4, frame_stride=2, clips_per_video=1)
    predictor = Predictor([randomize(build("a0", variant, 3), seed=18)], CLASSES, prep)
    predictor.predict(_frames(count), per_frame=True, name="clips/walk.mp4", progress=True)
    (bar,) = bars
    assert bar.options == {"total": count, "desc": "walk.mp4", "unit": " frames", "leave": False}
    assert bar.updates == updates and bar.closed
    predictor.predict(_frames(count), per_frame=True)
    assert len(bars) == 1  # no bar unless asked


def test_an_ensemble_on_a_video_of_one_clip_gives_each_member_its_frames():
    """Three frames for a two-member ensemble of 4-frame clips 2 apart: the clip is frames 0 and 2,
    one for each member (not all three frames)."""
    a, b = randomize(build("a0", "base", 3), seed=19), randomize(build("a0", "base", 3), seed=20)
    frames = _frames(3, seed=9)
    got = Predictor([a, b], CLASSES, PREP, offsets=[0, 1], stride=2).predict(frames)
    x = prepare_frames(frames, PREP)[None]
    with torch.no_grad():
        expected = torch.softmax((a(x[:, :, [0]]) + b(x[:, :, [2]])) / 2, 1)[0].numpy()
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-5)
