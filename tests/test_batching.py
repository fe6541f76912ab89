"""Batched multi-stream inference: stream sessions stepped together as one batch give each session
the answers it gets alone, frame for frame, whenever the sessions start and stop; in-process and
through the HTTP server."""

import io
import socket
import threading
import time

import numpy as np
import pytest
import requests
import torch

from conftest import randomize
from movinet.inference.batching import StreamBatcher, in_passing_thread
from movinet.inference.predictor import Predictor
from movinet.inference.server import ServerLimits, SharedModel, create_app
from movinet.inference.video_input import Preprocessing
from movinet.models import build, optimize_for_inference

PREP = Preprocessing(fps=None, size=40, crop_size=32, num_frames=4, frame_stride=1)
CLASSES = ["a", "b", "c", "d"]
LENGTHS = (13, 7, 20, 4, 16)  # frames per session
DELAYS = (0.0, 0.03, 0.0, 0.08, 0.015)  # seconds before each session opens
SIZES = ((48, 64), (60, 80), (48, 64), (48, 64), (60, 80))  # the batcher prepares each size on its own


def videos(lengths=LENGTHS, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (n, *size, 3), dtype=np.uint8) for n, size in zip(lengths, SIZES)]


def assert_same_rows(alone, batched):
    """The same frames answered, each within 1e-5 of the answer's scale."""
    assert [f for f, _ in batched] == [f for f, _ in alone]
    for (_, expected), (_, got) in zip(alone, batched):
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def push_alone(predictor: Predictor, video: np.ndarray) -> list:
    """The reference: the one-at-a-time path (traced batch-1 step), one frame per push."""
    session = predictor.session()
    return [row for frame in video for row in session.push(frame[None])]


def push_concurrently(predictor: Predictor, batcher: StreamBatcher, clips: list[np.ndarray]) -> list[list]:
    """Each clip in its own thread and session, opened after its delay, pushed in chunks of 1-3 frames."""
    results: list = [None] * len(clips)
    errors = []

    def run(i: int) -> None:
        try:
            time.sleep(DELAYS[i])
            session, rows, start = predictor.session(batcher=batcher), [], 0
            while start < len(clips[i]):
                size = 1 + (start + i) % 3
                rows += session.push(clips[i][start : start + size])
                start += size
            results[i] = rows
        except Exception as exc:  # noqa: BLE001 - surfaced in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_per_clip_counters_batch_streams_that_started_apart():
    """Two streams 3 frames apart, their states stacked (the counter becomes (2,)), step as each alone;
    A3 adds the positional encoding, which reads the counter too."""
    model = optimize_for_inference(randomize(build("a3", "stream", 4), seed=2))
    clip = torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        states = []
        for k, ahead in enumerate((3, 0)):
            state = model.init_state(1, 32)
            for t in range(ahead):
                _, state = model(clip[k : k + 1, :, t : t + 1], state)
            states.append(state)
        alone = [model(clip[k : k + 1, :, 3:4], s) for k, s in enumerate(states)]
        stacked = {key: torch.cat([s[key] for s in states]) for key in states[0]}
        assert stacked["frame_count"].tolist() == [3.0, 0.0]
        logits, new = model(clip[:, :, 3:4], stacked)
    for k, (expected, state) in enumerate(alone):
        scale = expected.abs().max().item()
        assert scale > 0.1 and (logits[k] - expected[0]).abs().max().item() <= 1e-5 * scale
        assert new["frame_count"][k] == state["frame_count"][0]


@pytest.mark.parametrize("ensemble", [False, True], ids=["one model", "ensemble"])
def test_concurrent_sessions_equal_each_session_alone(ensemble):
    torch.manual_seed(0)
    if ensemble:  # two members at half the rate, offsets 0 and 1: each member batches on its own
        members = [randomize(build("a0", "stream", 4), seed=s) for s in (3, 4)]
        predictor = Predictor(members, CLASSES, PREP, offsets=[0, 1], stride=2)
    else:
        predictor = Predictor([randomize(build("a2", "stream", 4), seed=3)], CLASSES, PREP)
    clips = videos()
    alone = [push_alone(predictor, clip) for clip in clips]
    batcher = predictor.stream_batcher(max_wait_ms=20.0)
    batched = push_concurrently(predictor, batcher, clips)
    for expected, got in zip(alone, batched):
        assert_same_rows(expected, got)
    assert batcher.steps == sum(LENGTHS)  # one step per frame (each member steps on its own frames)
    assert batcher.batches < batcher.steps  # and some of them did run together


def test_base_model_sessions_are_not_batched():
    predictor = Predictor([randomize(build("a0", "base", 4), seed=5)], CLASSES, PREP)
    assert predictor.stream_batcher() is None and SharedModel(predictor).batcher is None
    clip = videos((12,))[0]
    rows = SharedModel(predictor).session(None).push(clip)
    assert_same_rows(push_alone(predictor, clip), rows)
    assert [f for f, _ in rows] == [3, 5, 7, 9, 11]


def test_a_batched_server_predicts_on_the_batchers_thread():
    predictor = Predictor([randomize(build("a0", "stream", 4), seed=8)], CLASSES, PREP)
    model, clip = SharedModel(predictor), videos((10,))[0]
    expected = predictor.predict(clip, per_frame=True, name="clip")
    threads, predict = [], predictor.predict
    predictor.predict = lambda *args, **kwargs: threads.append(threading.current_thread()) or predict(*args, **kwargs)
    got = model.predict(clip, per_frame=True, name="clip")
    assert [t.name for t in threads] == ["movinet-stream-batcher"]
    np.testing.assert_allclose(got.probabilities, expected.probabilities, rtol=1e-5)
    assert [r["frame"] for r in got.timeline] == [r["frame"] for r in expected.timeline] == list(range(10))


def test_a_failed_batch_fails_its_callers_and_the_worker_goes_on():
    predictor = Predictor([randomize(build("a0", "stream", 4), seed=6)], CLASSES, PREP)
    batcher = StreamBatcher(list(predictor.ensemble.members), 32, idle_s=0.2)
    with pytest.raises(ValueError, match="init_state"):
        batcher.step(0, torch.rand(1, 3, 1, 48, 48), batcher.init_state(0))  # a state for 32², frames of 48²
    logits, state = batcher.step(0, torch.rand(1, 3, 1, 32, 32), batcher.init_state(0))
    assert logits.shape == (1, 4) and state["frame_count"].tolist() == [1.0]
    worker = batcher._worker
    worker.join(
        timeout=60
    )  # idle for idle_s: the worker ends (waited for, not slept), and the next request starts another
    assert not worker.is_alive() and batcher._worker is None
    assert batcher.step(0, torch.rand(1, 3, 1, 32, 32), state)[1]["frame_count"].tolist() == [2.0]


def test_in_passing_thread_returns_or_raises_what_the_function_does():
    def add(x, y=0):
        if x < 0:
            raise ValueError("negative")
        return x + y, threading.current_thread()

    total, thread = in_passing_thread(add, 2, y=3)
    assert total == 5 and thread is not threading.current_thread() and not thread.is_alive()
    with pytest.raises(ValueError, match="negative"):
        in_passing_thread(add, -1)


def start_server(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server


def http_session(url: str, clip: np.ndarray, delay: float = 0.0) -> list[dict]:
    """One session over HTTP: ``.npy`` chunks of 1-4 frames; every reply's answer."""
    time.sleep(delay)
    key = requests.post(f"{url}/streams", timeout=30).json()["id"]
    replies, start = [], 0
    while start < len(clip):
        size = 1 + start % 4
        body = io.BytesIO()
        np.save(body, clip[start : start + size])
        reply = requests.post(f"{url}/streams/{key}/frames", params={"top_k": 4}, data=body.getvalue(), timeout=60)
        assert reply.status_code == 200, reply.text
        replies.append({k: v for k, v in reply.json().items() if k != "id"})
        start += size
    assert requests.delete(f"{url}/streams/{key}", timeout=30).status_code == 204
    return replies


def test_concurrent_http_pushes_equal_sequential_ones():
    predictor = Predictor([randomize(build("a0", "stream", 4), seed=7)], CLASSES, PREP)
    app = create_app(predictor, ServerLimits(max_frames=16))
    app.state.model.batcher.max_wait = 0.02  # the test's clients are slow to come back: wait for them
    url, server = start_server(app)
    try:
        clips = videos(seed=1)
        sequential = [http_session(url, clip) for clip in clips]
        batcher = app.state.model.batcher
        steps, batches = batcher.steps, batcher.batches
        concurrent: list = [None] * len(clips)

        def run(i):
            concurrent[i] = http_session(url, clips[i], DELAYS[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.should_exit = True
    assert batcher.steps - steps == sum(LENGTHS) and batcher.batches - batches < sum(LENGTHS)
    for expected, got in zip(sequential, concurrent):
        assert [numbers_apart(r) for r in got] == [numbers_apart(r) for r in expected]
        for g, e in zip(got, expected):  # probabilities are rounded to 6 decimals in the replies
            assert {t["label"] for t in g["top"]} == set(CLASSES)
            assert probabilities(g) == pytest.approx(probabilities(e), abs=2e-6)


def numbers_apart(reply: dict) -> dict:
    """A reply but its probabilities: frame counts, the frame answered, the label."""
    return {k: v for k, v in reply.items() if k not in ("top", "score")}


def probabilities(reply: dict) -> dict[str, float]:
    return {t["label"]: t["probability"] for t in reply["top"]}
