"""movinet serve: a real uvicorn server on 127.0.0.1, real mp4 uploads, streaming sessions that
equal offline streaming, and 4xx (never 500) for bad input."""

import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import randomize, tiny_config, write_video
from movinet.inference.predictor import Predictor
from movinet.inference.server import ServerLimits, create_app
from movinet.inference.video_input import Preprocessing
from movinet.models import build, save_checkpoint

CLASSES = ["left", "right", "still"]
CONFIG = tiny_config(
    "data.extract.size=40",
    "data.transform.crop_size=32",
    "data.clips.num_frames=4",
    "data.clips.frame_stride=2",
    "data.clips.eval_clips_per_video=2",
)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size (a decompression bomb needs no pixel data to be refused)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    model = randomize(build("a0", "stream", 3), seed=4)
    return save_checkpoint(model, folder / "model.pt", class_names=CLASSES, extra={"config": CONFIG})


@pytest.fixture(scope="module")
def server(model_file):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "movinet.cli",
            "serve",
            "--model",
            str(model_file),
            "--port",
            str(port),
            "--max-upload-mb",
            "0.5",
            "--max-frames",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{proc.stdout.read()}")
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = np.random.default_rng(5).integers(0, 255, (40, 48, 64, 3), dtype=np.uint8)
    write_video(path, frames, 20, "libx264")
    return path


def test_predict_uploaded_mp4_equals_offline(server, model_file, video):
    offline = Predictor.from_checkpoints([model_file], Preprocessing.from_config(CONFIG)).predict(video, per_frame=True)
    with open(video, "rb") as f:
        got = requests.post(
            f"{server}/predict",
            params={"per_frame": "true", "top_k": 2},
            files={"video": ("clip.mp4", f, "video/mp4")},
            timeout=60,
        )
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["video"] == "clip.mp4" and body["frames"] == 20 and len(body["top"]) == 2
    assert body["label"] == offline.label
    assert body["score"] == pytest.approx(float(offline.probabilities.max()), abs=1e-5)
    assert [r["frame"] for r in body["per_frame"]] == [r["frame"] for r in offline.timeline]
    schema = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert {"/predict", "/streams", "/streams/{key}/frames", "/streams/{key}"} <= set(schema["paths"])


def test_stream_session_equals_offline_streaming(server, model_file):
    frames = np.random.default_rng(6).integers(0, 255, (20, 48, 64, 3), dtype=np.uint8)
    offline = Predictor.from_checkpoints([model_file], Preprocessing.from_config(CONFIG)).predict(
        frames, per_frame=True
    )
    key = requests.post(f"{server}/streams", timeout=10).json()["id"]
    for part in (frames[:7], frames[7:8], frames[8:16], frames[16:]):
        buf = io.BytesIO()
        np.save(buf, part)
        reply = requests.post(f"{server}/streams/{key}/frames", data=buf.getvalue(), timeout=30)
        assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["frames_received"] == 20 and body["frame"] == offline.timeline[-1]["frame"] == 18
    expected = offline.timeline[-1]["probabilities"]
    assert body["label"] == CLASSES[int(expected.argmax())]
    assert body["score"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert requests.delete(f"{server}/streams/{key}", timeout=10).status_code == 204
    assert requests.post(f"{server}/streams/{key}/frames", data=buf.getvalue(), timeout=10).status_code == 404


def test_bad_input_is_4xx_with_a_message(server, video):
    def post_video(data: bytes):
        return requests.post(f"{server}/predict", files={"video": ("x.mp4", data, "video/mp4")}, timeout=30)

    too_big = post_video(b"\0" * (600 * 1024))
    assert too_big.status_code == 413 and "0.5 MB" in too_big.json()["detail"]
    garbage = post_video(b"this is not a video" * 10)
    assert garbage.status_code == 422 and "x.mp4" in garbage.json()["detail"]
    assert post_video(b"").status_code == 422
    assert requests.post(f"{server}/predict", timeout=10).status_code == 422  # no file at all
    key = requests.post(f"{server}/streams", timeout=10).json()["id"]
    buf = io.BytesIO()
    np.save(buf, np.zeros((9, 16, 16, 3), np.uint8))
    many = requests.post(f"{server}/streams/{key}/frames", data=buf.getvalue(), timeout=10)
    assert many.status_code == 413 and "limit is 8" in many.json()["detail"]
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 8, 8), np.float32))
    wrong = requests.post(f"{server}/streams/{key}/frames", data=buf.getvalue(), timeout=10)
    assert wrong.status_code == 422 and "uint8" in wrong.json()["detail"]
    junk = requests.post(f"{server}/streams/{key}/frames", data=b"\x93NUMPYjunk", timeout=10)
    assert junk.status_code == 422
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 0, 8, 3), np.uint8))  # no pixels
    empty = requests.post(f"{server}/streams/{key}/frames", data=buf.getvalue(), timeout=10)
    assert empty.status_code == 422 and "(2, 0, 8, 3)" in empty.json()["detail"]
    bomb = requests.post(f"{server}/streams/{key}/frames", data=png_header(40_000, 40_000), timeout=10)
    assert bomb.status_code == 422 and "too large" in bomb.json()["detail"]  # Pillow's own bomb check
    huge = requests.post(f"{server}/streams/{key}/frames", data=b"\0" * (600 * 1024), timeout=10)
    assert huge.status_code == 413 and "0.5 MB" in huge.json()["detail"]
    chunked = requests.post(f"{server}/streams/{key}/frames", data=iter([b"\0" * (300 * 1024)] * 2), timeout=10)
    assert chunked.status_code == 413  # no Content-Length: counted while reading
    assert requests.post(f"{server}/streams/nope/frames", data=b"x", timeout=10).status_code == 404
    assert requests.post(f"{server}/streams", params={"fps": -1}, timeout=10).status_code == 422


def hostile_frames() -> dict[str, bytes]:
    """Bodies that cost far more than their size if trusted: thin or huge frames, lying headers, other formats."""
    from PIL import Image

    def image(width: int, height: int, fmt: str) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, height)).save(out, format=fmt)
        return out.getvalue()

    lying = io.BytesIO()
    np.save(lying, np.zeros((1, 16, 16, 3), np.uint8))
    header_len = len(lying.getvalue()) - 16 * 16 * 3
    claim = np.lib.format.header_data_from_array_1_0(np.zeros((1, 16, 16, 3), np.uint8))
    claim["shape"] = (100_000, 1000, 1000, 3)  # 300 GB, in a 128-byte header
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, claim)
    return {
        "a 2000x1 frame is outside the limits": image(2000, 1, "PNG"),  # 86 bytes, upscaled x172 to the crop
        "a 32000x1 frame is outside the limits": image(32000, 1, "PNG"),
        "a 13000x13000 frame is outside the limits": png_header(13_000, 13_000),  # under Pillow's bomb limit
        "a 400x20 frame is outside the limits": image(400, 20, "PNG"),  # aspect 20
        "the .npy header says (100000, 1000, 1000, 3)": header.getvalue() + lying.getvalue()[header_len:],
        "PNG/JPEG": image(64, 48, "BMP"),
        "PNG/JPEG ": image(64, 48, "GIF"),
        "PNG/JPEG  ": image(64, 48, "TIFF"),
    }


def test_hostile_frames_are_refused_from_their_size_before_decoding(server):
    key = requests.post(f"{server}/streams", timeout=10).json()["id"]
    for message, body in hostile_frames().items():
        reply = requests.post(f"{server}/streams/{key}/frames", data=body, timeout=30)
        assert reply.status_code == 422 and message.strip() in reply.json()["detail"], (message, reply.text)
    for fps in ("inf", "nan", "1e400", "100000", "0"):
        assert requests.post(f"{server}/streams", params={"fps": fps}, timeout=10).status_code == 422, fps
    assert requests.get(f"{server}/health", timeout=10).json()["model"] is None  # a local path is not shown


def test_idle_sessions_expire_and_sessions_are_limited(model_file):
    from fastapi.testclient import TestClient
    from PIL import Image

    predictor = Predictor.from_checkpoints([model_file], Preprocessing.from_config(CONFIG))
    app = create_app(predictor, ServerLimits(session_ttl_s=30.0, max_sessions=2))
    now = [1000.0]
    app.state.store.clock = lambda: now[0]  # the store's clock, moved by hand: no sleeping
    client = TestClient(app)
    first = client.post("/streams").json()["id"]
    client.post("/streams")
    assert client.post("/streams").status_code == 429
    png = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(png, format="PNG")
    assert client.post(f"/streams/{first}/frames", content=png.getvalue()).json()["frames_received"] == 1
    now[0] += 30.0  # idle for exactly the TTL: still open
    assert client.post(f"/streams/{first}/frames", content=png.getvalue()).json()["frames_received"] == 2
    now[0] += 30.5  # idle past the TTL: gone, and so is the other one
    assert client.post(f"/streams/{first}/frames", content=png.getvalue()).status_code == 404
    assert client.post("/streams").status_code == 201  # the expired ones made room


def _served(predictor):
    from fastapi.testclient import TestClient

    return TestClient(create_app(predictor, ServerLimits()))


def _expected_answer(probabilities: np.ndarray, k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"label": CLASSES[i], "probability": pytest.approx(float(probabilities[i]), abs=2e-6)} for i in order]


@pytest.mark.parametrize("kind", ["base", "ensemble"])
def test_a_base_model_and_an_ensemble_answer_over_http_as_offline(kind, video):
    """The server's JSON, parsed and compared number by number with the offline predictor: an upload
    with its timeline, and a stream session, for a base model and for a two-member stream ensemble."""
    prep = Preprocessing.from_config(CONFIG)
    if kind == "base":
        predictor = Predictor([randomize(build("a0", "base", 3), seed=7)], CLASSES, prep)
    else:
        members = [randomize(build("a0", "stream", 3), seed=s) for s in (8, 9)]
        predictor = Predictor(members, CLASSES, prep, offsets=[0, 1], stride=2)
    offline = predictor.predict(video, per_frame=True)
    client = _served(predictor)
    with open(video, "rb") as f:
        reply = client.post("/predict", params={"per_frame": "true", "top_k": 3}, files={"video": ("v.mp4", f)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["video"], body["frames"], body["fps"]) == ("v.mp4", offline.frames, offline.fps)
    assert body["top"] == _expected_answer(offline.probabilities, 3)
    assert [(r["frame"], r["time"]) for r in body["per_frame"]] == [(r["frame"], r["time"]) for r in offline.timeline]
    for row, want in zip(body["per_frame"], offline.timeline):
        assert row["top"] == _expected_answer(want["probabilities"], 1)

    frames = np.random.default_rng(10).integers(0, 255, (14, 48, 64, 3), dtype=np.uint8)
    expected = predictor.predict(frames, per_frame=True).timeline
    key = client.post("/streams").json()["id"]
    for part in (frames[:5], frames[5:6], frames[6:]):
        buf = io.BytesIO()
        np.save(buf, part)
        reply = client.post(f"/streams/{key}/frames", content=buf.getvalue(), params={"top_k": 3})
        assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["frames_received"] == 14 and body["frame"] == expected[-1]["frame"]
    assert body["top"] == _expected_answer(expected[-1]["probabilities"], 3)
