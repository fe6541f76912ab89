"""Inference speed: the predictor and the HTTP server against their own parts, measured in one run.

    python benchmarks/inference_speed.py [--frames 600] [--size 172] [--arch a0]

A generated h264 video (``--frames`` frames at 25 fps, 320x240) and a stream model with random
weights (8 classes). Baselines in the same run:

- decoding alone (``VideoFrames.chunks``: decode + resize + crop, no model) and the traced stream
  step alone on frames already in memory; the per-frame timeline should cost about their sum;
- the predictor called in-process, for the server's ``POST /predict`` (a real uvicorn server on
  127.0.0.1, the mp4 uploaded) and for a streaming session fed ``.npy`` chunks of 16 frames.
"""

from __future__ import annotations

import argparse
import io
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch

from movinet.data.demo import write_video
from movinet.inference.predictor import Predictor
from movinet.inference.server import ServerLimits, create_app
from movinet.inference.video_input import Preprocessing, VideoFrames, prepare_frames
from movinet.models import TracedStream, build


def make_video(path: Path, frames: int, height: int = 240, width: int = 320) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        wave = 127 * np.sin((xx + 3 * t) / 17.0) * np.cos((yy - 2 * t) / 23.0)
        for c in range(3):
            video[t, :, :, c] = np.clip(90 + 40 * c + wave + rng.normal(0, 4, (height, width)), 0, 255)
    write_video(path, video, 25, "libx264")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", type=int, default=172)
    parser.add_argument("--arch", default="a0")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

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


if __name__ == "__main__":
    main()
