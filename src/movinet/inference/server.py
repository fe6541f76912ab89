"""``movinet serve``: an HTTP API over a predictor (FastAPI; the OpenAPI schema is at /docs).

* ``POST /predict`` — a video upload (multipart field ``video``) → top-k, optional per-frame timeline;
* ``POST /streams`` → a session id; ``POST /streams/{id}/frames`` — one or more frames (a ``.npy``
  uint8 array ``(n, H, W, 3)`` or one PNG/JPEG image as the body) → the running prediction, the
  server keeping the stream state between requests; ``DELETE /streams/{id}``.

Sessions idle longer than ``session_ttl_s`` expire. Bad input — too large, too many frames, not a
video, not frames, unknown session — is a 4xx with a message, never a 500.

Layout: ``SharedModel`` is the predictor with the one lock every model call takes; ``SessionStore``
owns the open sessions (registry lock, expiry, limit); the routes are module-level functions on
``router`` that find both, and the limits, on ``request.app.state``, which ``create_app`` fills.
The routes' docstrings open with a ``\\f`` line: FastAPI cuts operation descriptions there, so
they stay out of the OpenAPI schema; they say why, for whoever edits the code, not how to call it.
"""

from __future__ import annotations

import io
import math
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from movinet.inference.predictor import Prediction, Predictor, StreamSession, top_classes
from movinet.inference.video_input import check_frame_size, frame_batch


@dataclass(frozen=True)
class ServerLimits:
    max_upload_mb: float = 100.0
    max_frames: int = 256  # frames per request to a session
    session_ttl_s: float = 300.0
    max_sessions: int = 64

    @property
    def max_bytes(self) -> int:
        """``max_upload_mb`` in bytes: the one limit on both uploads and frame bodies."""
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass
class SharedModel:
    """The predictor and the one lock that every use of its models takes.

    The models are not safe to run from several threads at once, and all sessions share the
    predictor's traced stream models (building a session may trace them), so ``/predict``, each
    session's creation and each frame push run one at a time under ``lock``.
    """

    predictor: Predictor
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, data: bytes, per_frame: bool, name: str) -> Prediction:
        with self.lock:
            return self.predictor.predict(data, per_frame=per_frame, name=name)

    def session(self, fps: float | None) -> StreamSession:
        with self.lock:
            return self.predictor.session(source_fps=fps)


@dataclass
class _Live:
    """One open session: its own lock (pushes to one stream run in order) and its last use (for expiry)."""

    session: StreamSession
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, key: str, frames: np.ndarray, model: SharedModel, top_k: int) -> dict:
        """Runs the frames and reads the answer under this session's lock (and the model's), so a
        concurrent push to the same session cannot change it between the push and the answer."""
        with self.lock, model.lock:
            rows = self.session.push(frames)
            self.last_used = time.monotonic()
            out = {"id": key, "frames_received": self.session.received, "new_predictions": len(rows)}
            if self.session.last is not None:
                position, probs = self.session.last
                out.update(frame=position, **_answer(model.predictor, probs, top_k))
            return out


class SessionStore:
    """The open stream sessions by id, with their expiry and their limit.

    ``_lock`` guards only the dict and is held briefly: creating a session (which may trace the
    model, under the model lock) happens outside it, so lookups never wait on the model. The limit is
    checked before creating (no wasted tracing when full) and again when registering (others may
    have registered meanwhile).
    """

    def __init__(self, model: SharedModel, ttl_s: float, max_sessions: int) -> None:
        self.model, self.ttl_s, self.max_sessions = model, ttl_s, max_sessions
        self._sessions: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def expire(self) -> None:
        """Drops the sessions idle longer than the TTL (run on each open and lookup: no timer thread)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, s in self._sessions.items() if now - s.last_used > self.ttl_s]:
                del self._sessions[key]

    def _refuse_if_full(self) -> None:  # the caller holds self._lock
        if len(self._sessions) >= self.max_sessions:
            raise HTTPException(429, f"{self.max_sessions} sessions are open; close one or wait")

    def open(self, fps: float | None) -> str:
        """A new session's id; 429 when ``max_sessions`` are open (after expiring the idle ones)."""
        self.expire()
        with self._lock:
            self._refuse_if_full()
        live = _Live(self.model.session(fps))  # under the model lock, not the registry's
        with self._lock:
            self._refuse_if_full()
            key = uuid.uuid4().hex
            self._sessions[key] = live
        return key

    def get(self, key: str) -> _Live:
        """The session ``key``; 404 when it was never opened, is closed, or has expired."""
        self.expire()
        with self._lock:
            found = self._sessions.get(key)
        if found is None:
            raise HTTPException(404, f"no stream session {key!r} (closed or expired)")
        return found

    def close(self, key: str) -> None:
        """Forgets the session ``key``; 404 as ``get`` when there is none."""
        self.get(key)
        with self._lock:
            self._sessions.pop(key, None)


def _answer(predictor: Predictor, probs: np.ndarray, top_k: int) -> dict:
    top = [{"label": name, "probability": round(p, 6)} for name, p in top_classes(probs, predictor.class_names, top_k)]
    return {"label": top[0]["label"], "score": top[0]["probability"], "top": top}


def _prediction(result: Prediction, predictor: Predictor, top_k: int) -> dict:
    out = {
        "video": result.video,
        "frames": result.frames,
        "fps": result.fps,
        **_answer(predictor, result.probabilities, top_k),
    }
    if result.timeline:
        out["per_frame"] = [
            {"frame": r["frame"], "time": r["time"], **_answer(predictor, r["probabilities"], 1)}
            for r in result.timeline
        ]
    return out


def _decode_frames(body: bytes) -> np.ndarray:
    """A pushed body as frames: a ``.npy`` whose header agrees with its length, or one PNG/JPEG. Sizes
    are checked from the header, before anything is allocated or decoded."""
    if body.startswith(b"\x93NUMPY"):
        return frame_batch(_read_npy(body))
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(body), formats=["PNG", "JPEG"])
        check_frame_size(image.height, image.width)
        frames = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large ({exc})") from None
    except (UnidentifiedImageError, OSError):
        raise ValueError("the body must be a .npy uint8 array (n, H, W, 3) or one PNG/JPEG image") from None
    return frame_batch(frames)  # checked here too: the frame limit counts them before the session runs


def _read_npy(body: bytes) -> np.ndarray:
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in headers:
            raise ValueError(f"version {version} (1.0 or 2.0, as numpy writes)")
        shape, _, dtype = headers[version](stream)
    except ValueError as exc:
        raise ValueError(f"unreadable .npy array ({exc})") from None
    if dtype != np.uint8 or len(shape) not in (3, 4) or shape[-1] != 3 or 0 in shape:
        raise ValueError(f"frames must be uint8 (n, H, W, 3), got {dtype} {shape}")
    check_frame_size(*shape[-3:-1])
    if math.prod(shape) != len(body) - stream.tell():  # a header may claim any shape: numpy would allocate it
        raise ValueError(f"the .npy header says {shape} but the body holds {len(body) - stream.tell()} bytes of data")
    return np.load(io.BytesIO(body), allow_pickle=False)


async def _read_body(request: Request, max_bytes: int, max_mb: float) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit (never read whole first)."""
    too_large = HTTPException(413, f"body larger than {max_mb:g} MB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


router = APIRouter()


async def _bad_input(request: Request, exc: ValueError):
    """Bad content (not a video, not frames, too short...) surfaces as ValueError: a 422, not a 500."""
    return JSONResponse(status_code=422, content={"detail": str(exc)})


@router.get("/health")
def health(request: Request) -> dict:
    """
    \f
    What is served: a client checks the classes and preprocessing before sending videos.
    """
    state = request.app.state
    predictor = state.model.predictor
    return {
        "status": "ok",
        "model": state.model_uri if state.model_uri.startswith("models:/") else None,  # never a server path
        "classes": predictor.class_names,
        "streaming": predictor.streaming,
        "members": len(predictor.members),
        "preprocessing": predictor.prep.to_dict(),
    }


@router.post("/predict")
async def predict(request: Request, video: UploadFile, per_frame: bool = False, top_k: int = Query(5, ge=1)) -> dict:
    """
    \f
    One uploaded video's answer; the model runs in a worker thread so the server keeps serving.
    """
    state = request.app.state
    data = await video.read(state.limits.max_bytes + 1)  # one byte more tells "too large" apart
    if len(data) > state.limits.max_bytes:
        raise HTTPException(413, f"upload larger than {state.limits.max_upload_mb:g} MB")
    result = await run_in_threadpool(state.model.predict, bytes(data), per_frame, video.filename or "upload")
    return _prediction(result, state.model.predictor, top_k)


@router.post("/streams", status_code=201)
def open_stream(
    request: Request,
    fps: float | None = Query(None, gt=0, le=1000, allow_inf_nan=False, description="the source's frame rate"),
) -> dict:
    """
    \f
    A new live-stream session; the client pushes frames to it by id.
    """
    store = request.app.state.store
    return {"id": store.open(fps), "expires_after_idle_s": store.ttl_s}


@router.post("/streams/{key}/frames")
async def push_frames(key: str, request: Request, top_k: int = Query(5, ge=1)) -> dict:
    """
    \f
    Frames into a session and its running answer; limits are checked before the model runs.
    """
    state = request.app.state
    live = state.store.get(key)
    body = await _read_body(request, state.limits.max_bytes, state.limits.max_upload_mb)
    frames = await run_in_threadpool(_decode_frames, body)  # off the event loop: /health stays responsive
    if len(frames) > state.limits.max_frames:
        raise HTTPException(413, f"{len(frames)} frames in one request; the limit is {state.limits.max_frames}")
    return await run_in_threadpool(live.push, key, frames, state.model, top_k)


@router.delete("/streams/{key}", status_code=204, response_class=Response)
def close_stream(key: str, request: Request):
    """
    \f
    Ends a session now rather than at its expiry, freeing its place under the limit.
    """
    request.app.state.store.close(key)
    return Response(status_code=204)


def create_app(predictor: Predictor, limits: ServerLimits = ServerLimits(), model_uri: str = ""):
    """The app serving ``predictor``; its state (model, store, limits) lives on ``app.state``, so
    several apps in one process (tests, benchmarks) share no state."""
    import movinet

    app = FastAPI(
        title="movinet",
        version=movinet.__version__,
        description="MoViNet video classification: whole videos and live streams.",
    )
    model = SharedModel(predictor)
    app.state.model, app.state.limits, app.state.model_uri = model, limits, model_uri
    app.state.store = SessionStore(model, limits.session_ttl_s, limits.max_sessions)
    app.add_exception_handler(ValueError, _bad_input)
    app.include_router(router)
    return app


def serve(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServerLimits = ServerLimits(),
    tracking_uri: str | None = None,
    device: str = "cpu",
) -> None:
    import uvicorn

    from movinet.inference.load import load_predictor

    app = create_app(load_predictor(model_uri, tracking_uri, device), limits, model_uri)
    uvicorn.run(app, host=host, port=port, log_level="info")
