"""movinet serve under hostile input, through a real server process on 127.0.0.1: each class of
input gets a 4xx with a message, and the server's peak memory grows by less than a stated bound.
Plus access: the bearer token, and no exposed address without one."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from test_serving import free_port, hostile_frames, model_file, video  # noqa: F401  (module fixtures)

from movinet.inference.server import check_exposure

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PEAK_GROWTH_MB = 64  # the stated bound: every hostile input together may raise the peak by this much


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@contextlib.contextmanager
def running_server(model: Path, *args: str):
    """``movinet serve`` as its own process on a free 127.0.0.1 port: (url, pid, port)."""
    port = free_port()
    cmd = [sys.executable, "-m", "movinet.cli", "serve", "--model", str(model), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    try:
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("server did not start") from None
                time.sleep(0.3)
        yield url, proc.pid, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


LIMITS = ["--max-upload-mb", "0.5", "--max-frames", "8", "--max-uploads", "1", "--body-timeout", "2"]


@pytest.fixture(scope="module")
def guarded(model_file):  # noqa: F811
    with running_server(model_file, *LIMITS, "--token", TOKEN) as server:
        yield server


def _warm_up(url: str) -> str:
    key = requests.post(f"{url}/streams", headers=AUTH, timeout=10).json()["id"]
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8))
    assert requests.post(f"{url}/streams/{key}/frames", data=buf.getvalue(), headers=AUTH, timeout=30).ok
    return key


def _slow_post(port: int, path: str, total: int, seconds: float, kind: str = "application/octet-stream", first=b""):
    """A POST that declares ``total`` bytes, sends ``first`` and trickles the rest over ``seconds``; the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds + 10) as conn:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        conn.sendall((head + f"Content-Type: {kind}\r\nContent-Length: {total}\r\n\r\n").encode() + first)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                conn.sendall(b"\0")
                time.sleep(0.05)
        except OSError:
            pass  # the server may close on us: its reply is what counts
        return conn.recv(4096)


def test_every_hostile_input_is_4xx_and_memory_stays_bounded(guarded):
    url, pid, port = guarded
    key = _warm_up(url)
    before = peak_rss_mb(pid)
    for message, body in hostile_frames().items():
        reply = requests.post(f"{url}/streams/{key}/frames", data=body, headers=AUTH, timeout=30)
        assert reply.status_code == 422 and message.strip() in reply.json()["detail"], (message, reply.text)
    for fps in ("inf", "-inf", "nan", "1e400", "0", "100000"):
        assert requests.post(f"{url}/streams", params={"fps": fps}, headers=AUTH, timeout=10).status_code == 422
    declared = requests.post(f"{url}/streams/{key}/frames", data=b"\0" * 600_000, headers=AUTH, timeout=10)
    assert declared.status_code == 413 and "0.5 MB" in declared.json()["detail"]
    chunks = iter([b"\0" * 200_000] * 50)  # 10 MB without a Content-Length: cut off at 0.5 MB
    chunked = requests.post(f"{url}/streams/{key}/frames", data=chunks, headers=AUTH, timeout=30)
    assert chunked.status_code == 413
    upload = requests.post(f"{url}/predict", files={"video": ("big.mp4", b"\0" * 600_000)}, headers=AUTH, timeout=10)
    assert upload.status_code == 413
    started = time.monotonic()
    slow = _slow_post(port, f"/streams/{key}/frames", 100_000, seconds=6)
    assert b" 408 " in slow.split(b"\r\n")[0] and b"longer than 2 s" in slow
    assert time.monotonic() - started < 8
    growth = peak_rss_mb(pid) - before
    assert growth < PEAK_GROWTH_MB, f"peak RSS grew by {growth:.1f} MB"
    assert requests.get(f"{url}/health", timeout=10).ok  # still serving


def test_concurrent_uploads_beyond_the_limit_wait_their_turn(guarded):
    url, _, port = guarded
    multipart = "multipart/form-data; boundary=b0undary"
    part = b'--b0undary\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n'
    holder = threading.Thread(target=_slow_post, args=(port, "/predict", 50_000, 1.5, multipart, part))
    holder.start()  # one upload in progress (--max-uploads 1) ...
    time.sleep(0.5)
    second = requests.post(f"{url}/predict", files={"video": ("v.mp4", b"x")}, headers=AUTH, timeout=10)
    holder.join()
    assert second.status_code == 429 and "1 uploads are in progress" in second.json()["detail"]
    again = requests.post(f"{url}/predict", files={"video": ("v.mp4", b"not a video")}, headers=AUTH, timeout=10)
    assert again.status_code == 422  # ... and afterwards the next one is served


def test_the_token_guards_every_route_but_health(guarded):
    url, _, _ = guarded
    for method, path in (("post", "/streams"), ("post", "/predict"), ("get", "/openapi.json"), ("get", "/docs")):
        refused = getattr(requests, method)(f"{url}{path}", timeout=10)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", path
        wrong = getattr(requests, method)(f"{url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
    assert requests.get(f"{url}/health", timeout=10).ok
    assert requests.post(f"{url}/streams", headers=AUTH, timeout=10).status_code == 201


def test_an_exposed_address_needs_a_token_or_insecure(model_file):  # noqa: F811
    cmd = [sys.executable, "-m", "movinet.cli", "serve", "--model", str(model_file), "--host", "0.0.0.0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--host 0.0.0.0 is reachable from other machines: give --token" in done.stderr
    check_exposure("127.0.0.1", None, False)
    check_exposure("::1", None, False)
    check_exposure("0.0.0.0", "t", False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="--insecure"):
        check_exposure("192.168.1.5", None, False)


def test_every_route_fuzzed_from_the_openapi_spec(model_file, tmp_path):  # noqa: F811
    """Schemathesis against the real server: no 5xx, every status documented, every body as the spec says.
    Excluded: positive_data_acceptance (a schema-valid upload that is no video is rightly refused).
    Its own server: the fuzzing opens sessions up to the limit, which would leave the other tests' full."""
    with running_server(model_file, *LIMITS, "--token", TOKEN) as (url, _, _):
        _fuzz(url, tmp_path)


def _fuzz(url: str, tmp_path: Path) -> None:
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "--checks", "all"]
    cmd += ["--exclude-checks", "positive_data_acceptance", "-H", f"Authorization: Bearer {TOKEN}"]
    cmd += ["--max-examples", "20", "--seed", "7", "--workers", "1", "--max-time", "40"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Selected: 5/5" in done.stdout and "Tested: 5" in done.stdout


def test_load_16_streams_beside_4_uploads(model_file, video, tmp_path):  # noqa: F811
    """benchmarks/load_test.py against a real server: no 5xx, every frame answered, every session freed,
    memory within 1.1x after warm-up (the script's own checks, its exit status)."""
    with running_server(model_file) as (url, pid, _):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "load_test.py"), "--url", url, "--video", str(video)]
        cmd += ["--pid", str(pid), "--json", str(tmp_path / "load.json")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "load.json").read_text())
    assert result["frame_latency"]["count"] == 16 * 200 and result["server_errors"] == 0
    assert result["open_sessions_at_end"] == 0 and result["memory_ratio"] <= 1.1
    assert result["upload_latency"]["count"] >= 4
