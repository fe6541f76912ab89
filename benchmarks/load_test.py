"""A bounded load run against a running ``movinet serve``: concurrent stream sessions beside concurrent
uploads, with latency percentiles, throughput and the server's memory.

    python benchmarks/load_test.py --url http://127.0.0.1:8000 --video clip.mp4 [--pid SERVER_PID]
        [--sessions 16] [--frames 200] [--uploads 4] [--token T] [--json out.json]

Each session opens, pushes ``--frames`` frames one request at a time (a one-frame ``.npy`` of the
video's frames, as a camera client would), then closes; meanwhile ``--uploads`` clients upload the
video in a loop until the sessions are done. With ``--pid`` (the server's process on this machine)
the server's resident memory is read after warm-up (every session past 10 % of its frames) and at
the end: it must stay within 1.1x. Exit status 1 on any 5xx, any failed request, a session left
open, or memory growth over 1.1x.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"frame": [], "upload": []})
    statuses: dict[int, int] = field(default_factory=dict)
    frames: int = 0
    warm: int = 0  # sessions past their warm-up

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies[kind].append(seconds)


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def one_frame_npy(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, frame[None])
    return out.getvalue()


async def session(client: httpx.AsyncClient, bodies: list[bytes], frames: int, tally: Tally, warm_at: int) -> None:
    opened = await client.post("/streams")
    tally.record("frame", opened.status_code, 0.0)
    key = opened.json()["id"]
    for i in range(frames):
        start = time.perf_counter()
        reply = await client.post(f"/streams/{key}/frames", content=bodies[i % len(bodies)])
        tally.record("frame", reply.status_code, time.perf_counter() - start)
        tally.frames += reply.status_code == 200
        if i + 1 == warm_at:
            tally.warm += 1
    closed = await client.delete(f"/streams/{key}")
    tally.record("frame", closed.status_code, 0.0)


async def uploads(client: httpx.AsyncClient, video: bytes, tally: Tally, done: asyncio.Event) -> None:
    while not done.is_set():
        start = time.perf_counter()
        reply = await client.post("/predict", files={"video": ("load.mp4", video, "video/mp4")})
        tally.record("upload", reply.status_code, time.perf_counter() - start)


async def watch_memory(pid: int | None, tally: Tally, sessions: int, done: asyncio.Event, out: dict) -> None:
    while not done.is_set() and tally.warm < sessions:
        await asyncio.sleep(0.05)
    out["after_warm_up_mb"] = rss_mb(pid)
    peak = out["after_warm_up_mb"] or 0.0
    while not done.is_set():
        peak = max(peak, rss_mb(pid) or 0.0)
        await asyncio.sleep(0.2)
    out["peak_after_warm_up_mb"] = peak if pid else None


async def run(args) -> dict:
    import torch  # noqa: F401  (before decord, as movinet.data.video does)
    from decord import VideoReader

    reader = VideoReader(str(args.video))
    bodies = [one_frame_npy(frame) for frame in reader.get_batch(list(range(len(reader)))).asnumpy()]
    video, tally, memory, done = Path(args.video).read_bytes(), Tally(), {}, asyncio.Event()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(max_connections=args.sessions + args.uploads + 4)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        warm_at = max(1, args.frames // 10)
        workers = [asyncio.create_task(uploads(client, video, tally, done)) for _ in range(args.uploads)]
        watcher = asyncio.create_task(watch_memory(args.pid, tally, args.sessions, done, memory))
        await asyncio.gather(*(session(client, bodies, args.frames, tally, warm_at) for _ in range(args.sessions)))
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(*workers, watcher)
        memory["end_mb"] = rss_mb(args.pid)
        health = (await client.get("/health")).json()
    return summary(args, tally, memory, elapsed, health)


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ms = sorted(v * 1e3 for v in values)
    return {"count": len(ms), "p50_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))]}


def summary(args, tally: Tally, memory: dict, elapsed: float, health: dict) -> dict:
    warm, peak = memory.get("after_warm_up_mb"), memory.get("peak_after_warm_up_mb")
    return {
        "sessions": args.sessions,
        "frames_per_session": args.frames,
        "uploads_in_parallel": args.uploads,
        "seconds": elapsed,
        "frames_per_s": tally.frames / elapsed,
        "frame_latency": _percentiles([v for v in tally.latencies["frame"] if v > 0]),
        "upload_latency": _percentiles(tally.latencies["upload"]),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "server_errors": sum(v for k, v in tally.statuses.items() if k >= 500),
        "open_sessions_at_end": health.get("sessions"),
        "memory_mb": memory,
        "memory_ratio": (peak / warm) if warm and peak else None,
    }


def failed(result: dict, expected_frames: int) -> list[str]:
    problems = []
    if result["server_errors"]:
        problems.append(f"{result['server_errors']} responses were 5xx")
    bad = {k: v for k, v in result["statuses"].items() if k not in ("200", "201", "204")}
    if bad:
        problems.append(f"non-success responses: {bad}")
    if round(result["frames_per_s"] * result["seconds"]) != expected_frames:
        problems.append("not every frame was answered")
    if result["open_sessions_at_end"] not in (0, None):
        problems.append(f"{result['open_sessions_at_end']} sessions left open")
    if result["memory_ratio"] is not None and result["memory_ratio"] > 1.1:
        problems.append(f"server memory grew {result['memory_ratio']:.2f}x after warm-up")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--pid", type=int, help="the server's process id (for its memory)")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--token")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    problems = failed(result, args.sessions * args.frames)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
