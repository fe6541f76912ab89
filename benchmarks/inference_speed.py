"""Inference speed: the predictor and the HTTP server against their own parts, measured in one run.

    python benchmarks/inference_speed.py [--frames 600] [--size 172] [--arch a0]

A generated h264 video (``--frames`` frames at 25 fps, 320x240) and a stream model with random
weights (8 classes). Baselines in the same run:

- decoding alone (``VideoFrames.chunks``: decode + resize + crop, no model) and the traced stream
  step alone on frames already in memory; the per-frame timeline should cost about their sum;
- the predictor called in-process, for the server's ``POST /predict`` (a real uvicorn server on
  127.0.0.1, the mp4 uploaded) and for a streaming session fed ``.npy`` chunks of 16 frames;
- 8 concurrent streams (``--streams``), each its own session pushed from its own thread: aggregate
  frames/s with the stream steps batched across sessions (``StreamBatcher``, what ``movinet serve``
  does) against the same streams served one at a time (each session stepping the traced batch-1
  model under the model lock), rounds alternating so both see the same machine; in-process
  (``SessionStore`` and ``_Live.push``, the server's push path without HTTP) and over HTTP.

The streams section runs in a process of its own (``--streams-only`` runs just that), built as
``movinet serve`` builds its server: the model loaded on a passing thread, so the main thread holds
no OpenMP pool (``movinet.inference.batching`` says why that matters). ``--load-on-main`` loads it
on the main thread instead, to show what that costs.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import requests
import torch

from movinet.data.demo import write_video
from movinet.inference.batching import in_passing_thread
from movinet.inference.predictor import Predictor
from movinet.inference.server import ServerLimits, SessionStore, SharedModel, create_app
from movinet.inference.video_input import Preprocessing, VideoFrames, prepare_frames
from movinet.models import TracedStream, build, optimize_for_inference


def make_video(path: Path, frames: int, height: int = 240, width: int = 320) -> np.ndarray:
    video = make_frames(frames, height, width)
    write_video(path, video, 25, "libx264")
    return video


def make_frames(frames: int, height: int = 240, width: int = 320) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        wave = 127 * np.sin((xx + 3 * t) / 17.0) * np.cos((yy - 2 * t) / 23.0)
        for c in range(3):
            video[t, :, :, c] = np.clip(90 + 40 * c + wave + rng.normal(0, 4, (height, width)), 0, 255)
    return video


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up (tracing, allocator)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def start_server(predictor: Predictor) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(predictor, ServerLimits(max_upload_mb=200, max_frames=10_000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)
    return url, server


def in_threads(work, items) -> float:
    """Seconds from the moment every thread is ready (``work(item, ready)`` calls ``ready()``) until
    the last one is done: set-up (opening sessions, connecting) is not timed."""
    barrier = threading.Barrier(len(items) + 1)
    threads = [threading.Thread(target=work, args=(item, barrier.wait)) for item in items]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def streams_in_process(model: SharedModel, clips: list[np.ndarray], chunk: int) -> float:
    """Each clip in its own session and thread, ``chunk`` frames per push, through the server's
    ``SessionStore`` and ``_Live.push`` (everything a push does but HTTP)."""
    store = SessionStore(model, 3600, 64)

    def work(clip, ready):
        key = store.open(None)
        live = store.get(key)
        ready()
        for i in range(0, len(clip), chunk):
            live.push(key, clip[i : i + chunk], model, 5)
        store.close(key)

    return in_threads(work, clips)


def streams_over_http(url: str, bodies: list[list[bytes]]) -> float:
    """Each stream's ``.npy`` bodies pushed from its own thread, over its own keep-alive connection."""

    def work(chunks, ready):
        with requests.Session() as http:
            key = http.post(f"{url}/streams", timeout=60).json()["id"]
            ready()
            for body in chunks:
                http.post(f"{url}/streams/{key}/frames", data=body, timeout=600).raise_for_status()
            http.delete(f"{url}/streams/{key}", timeout=60)

    return in_threads(work, bodies)


def npy_chunks(clip: np.ndarray, chunk: int) -> list[bytes]:
    out = []
    for i in range(0, len(clip), chunk):
        buffer = io.BytesIO()
        np.save(buffer, clip[i : i + chunk])
        out.append(buffer.getvalue())
    return out


def step_baselines(model, size: int, batch: int, repeats: int = 5, steps: int = 10) -> dict[str, float]:
    """ms per frame of the stream step alone: traced at batch 1 (what one-at-a-time runs), and at
    ``batch`` eager on the fast path (what the batcher runs) and traced for that one batch size."""
    fast = optimize_for_inference(model)
    runs = {
        "traced, batch 1": (TracedStream(model, size), 1),
        f"traced, batch {batch}": (TracedStream(model, size, batch), batch),
    }
    runs[f"fast path (eager), batch {batch}"] = (fast, batch)
    best = {}
    with torch.inference_mode():
        for _ in range(repeats):  # alternating, best of each
            for name, (step, b) in runs.items():
                state = step.init_state() if isinstance(step, TracedStream) else step.init_state(b, size)
                x = torch.rand(b, 3, 1, size, size)
                state = step(x, state)[1]
                start = time.perf_counter()
                for _ in range(steps):
                    state = step(x, state)[1]
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / steps / b * 1e3)
    return best


def alternate(runs: dict, repeats: int) -> dict[str, float]:
    """Best seconds of each run over ``repeats`` rounds, the runs taking turns within a round (a noisy
    machine slows them alike), after a warm-up round (tracing, connections)."""
    best = {name: float("inf") for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            seconds = run()
            if round_:
                best[name] = min(best[name], seconds)
    return best


def stream_predictor(args) -> Predictor:
    """The benchmark's model, loaded as ``movinet serve`` loads it (on a passing thread), or on the
    main thread with ``--load-on-main``."""

    def load():
        prep = Preprocessing(fps=None, size=args.size, crop_size=args.size, num_frames=8, frame_stride=1)
        return Predictor([build(args.arch, "stream", 8)], [f"c{i}" for i in range(8)], prep)

    return load() if args.load_on_main else in_passing_thread(load)


def serve_streams(args) -> None:
    """``--serve PORT``: a server process for the streams section, batched unless ``--no-batching``."""
    import uvicorn

    limits = ServerLimits(max_upload_mb=200, max_frames=10_000)
    app = create_app(stream_predictor(args), limits)
    if args.no_batching:  # the one-at-a-time path: sessions step the traced batch-1 model under the lock
        app.state.model = SharedModel(app.state.model.predictor, batching=False)
        app.state.store = SessionStore(app.state.model, limits.session_ttl_s, limits.max_sessions)
    uvicorn.run(app, host="127.0.0.1", port=args.serve, log_level="warning")


def server_process(batching: bool) -> tuple[str, subprocess.Popen]:
    """A server in a process of its own, as ``movinet serve`` runs: the two servers' request threads
    (and their OpenMP pools) stay apart, and neither shares the client's process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, __file__, *sys.argv[1:], "--serve", str(port)]
    proc = subprocess.Popen(command + ([] if batching else ["--no-batching"]))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return url, proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the benchmark's server did not start")


def concurrent_streams(args) -> None:
    """The section "8 concurrent streams": batched against one at a time, in-process and over HTTP."""
    predictor = stream_predictor(args)
    raw = make_frames(args.frames)
    n, count = args.stream_frames, args.streams
    offsets = [i * len(raw) // count for i in range(count)]  # each stream its own stretch of the video
    clips = [np.take(raw, np.arange(o, o + n) % len(raw), axis=0) for o in offsets]
    baselines = in_passing_thread(step_baselines, predictor.members[0], args.size, count)
    models = {"one": SharedModel(predictor, batching=False), "batched": SharedModel(predictor)}
    batcher = models["batched"].batcher
    results = []
    for chunk in (1, 16):
        steps, batches = batcher.steps, batcher.batches
        runs = {mode: partial(streams_in_process, model, clips, chunk) for mode, model in models.items()}
        best = alternate(runs, args.stream_repeats)
        mean_batch = f"{(batcher.steps - steps) / max(1, batcher.batches - batches):.1f}"
        results.append((f"in-process `_Live.push`, {chunk} frame(s) a push", best["one"], best["batched"], mean_batch))
    servers = {"one": server_process(batching=False), "batched": server_process(batching=True)}
    try:
        for chunk in (1, 16):
            bodies = [npy_chunks(clip, chunk) for clip in clips]
            runs = {mode: partial(streams_over_http, url, bodies) for mode, (url, _) in servers.items()}
            best = alternate(runs, args.stream_repeats)
            results.append((f"HTTP, `.npy` bodies of {chunk} frame(s)", best["one"], best["batched"], ""))
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    print_streams(args, baselines, results)


def print_streams(args, baselines: dict[str, float], results: list[tuple]) -> None:
    total = args.streams * args.stream_frames
    print()
    where = "the main thread" if args.load_on_main else "a passing thread, as `movinet serve` does"
    print(
        f"## {args.streams} concurrent streams ({args.arch.upper()} stream, {args.size}², random weights, "
        f"{args.threads} threads; model loaded on {where})"
    )
    print("| stream step alone | ms/frame |")
    print("|---|---|")
    for name, ms in baselines.items():
        print(f"| {name} | {ms:.2f} |")
    print()
    print(
        f"{args.streams} streams x {args.stream_frames} frames ({total} frames), best of {args.stream_repeats} "
        "alternating rounds after a warm-up:"
    )
    print()
    print("| path | one at a time s | frames/s | batched s | frames/s | speed-up | mean batch |")
    print("|---|---|---|---|---|---|---|")
    for label, t_one, t_batched, mean_batch in results:
        print(
            f"| {label} | {t_one:.2f} | {total / t_one:.0f} | {t_batched:.2f} | {total / t_batched:.0f} | "
            f"{t_one / t_batched:.2f}x | {mean_batch} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", type=int, default=172)
    parser.add_argument("--arch", default="a0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams in the last section")
    parser.add_argument("--stream-frames", type=int, default=60, help="frames per concurrent stream")
    parser.add_argument("--stream-repeats", type=int, default=3)
    parser.add_argument("--streams-only", action="store_true", help="only the concurrent streams section")
    parser.add_argument("--load-on-main", action="store_true", help="streams: load the model on the main thread")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the streams section's server processes
    parser.add_argument("--no-batching", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.serve:
        serve_streams(args)
        return
    if args.streams_only:
        concurrent_streams(args)
        return

    prep = Preprocessing(fps=None, size=args.size, crop_size=args.size, num_frames=8, frame_stride=1)
    predictor = Predictor([build(args.arch, "stream", 8)], [f"c{i}" for i in range(8)], prep)
    n = args.frames
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        raw = make_video(path, n)
        data = path.read_bytes()

        def decode_only():
            with VideoFrames(path, prep) as video:
                for _ in video.chunks():
                    pass

        prepared = prepare_frames(raw, prep)  # (3, T, S, S)
        traced = TracedStream(predictor.members[0], args.size)  # what the timeline runs

        def model_only():
            state = traced.init_state()
            with torch.inference_mode():
                for t in range(n):
                    _, state = traced(prepared[None, :, t : t + 1], state)

        t_decode = timed(decode_only)
        t_model = timed(model_only)
        t_timeline = timed(lambda: predictor.predict(path, per_frame=True))
        t_video = timed(lambda: predictor.predict(path))

        def session_in_process():
            session = predictor.session()
            for i in range(0, n, 16):
                session.push(raw[i : i + 16])

        t_session = timed(session_in_process)

        url, server = start_server(predictor)
        try:

            def upload(per_frame: bool):
                answer = requests.post(
                    f"{url}/predict",
                    params={"per_frame": per_frame},
                    files={"video": ("clip.mp4", data, "video/mp4")},
                    timeout=600,
                )
                answer.raise_for_status()

            chunks = []
            for i in range(0, n, 16):
                buffer = io.BytesIO()
                np.save(buffer, raw[i : i + 16])
                chunks.append(buffer.getvalue())

            def session_over_http():
                key = requests.post(f"{url}/streams", timeout=60).json()["id"]
                for body in chunks:
                    requests.post(f"{url}/streams/{key}/frames", data=body, timeout=60).raise_for_status()
                requests.delete(f"{url}/streams/{key}", timeout=60)

            s_video = timed(lambda: upload(False))
            s_timeline = timed(lambda: upload(True))
            s_session = timed(session_over_http)
        finally:
            server.should_exit = True

    per = lambda seconds: seconds / n * 1e3  # noqa: E731 - ms per frame
    print(
        f"## Inference ({args.arch.upper()} stream, {n} frames 320x240 h264 -> {args.size}^2, {args.threads} threads)"
    )
    print("| path | total s | ms/frame | baseline | ratio |")
    print("|---|---|---|---|---|")
    print(f"| decode + resize + crop only | {t_decode:.2f} | {per(t_decode):.2f} | | |")
    print(f"| traced stream step only | {t_model:.2f} | {per(t_model):.2f} | | |")
    print(
        f"| `predict(per_frame=True)` | {t_timeline:.2f} | {per(t_timeline):.2f} | decode + step "
        f"{per(t_decode + t_model):.2f} ms | {t_timeline / (t_decode + t_model):.2f} |"
    )
    print(f"| `predict()` (4 clips) | {t_video:.2f} | | | |")
    print(f"| `POST /predict` | {s_video:.2f} | | in-process {t_video:.2f} s | {s_video / t_video:.2f} |")
    print(
        f"| `POST /predict?per_frame=true` | {s_timeline:.2f} | {per(s_timeline):.2f} | in-process "
        f"{t_timeline:.2f} s | {s_timeline / t_timeline:.2f} |"
    )
    print(
        f"| session, 16-frame `.npy` chunks over HTTP | {s_session:.2f} | {per(s_session):.2f} | "
        f"in-process `push` {per(t_session):.2f} ms | {s_session / t_session:.2f} |"
    )

    # A process of its own: this one's main thread has run the model (an OpenMP pool of its own).
    subprocess.run([sys.executable, __file__, "--streams-only", *sys.argv[1:]], check=True)


if __name__ == "__main__":
    main()
