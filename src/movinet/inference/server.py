"""``movinet serve``: an HTTP API over a predictor (FastAPI; the OpenAPI schema is at /docs).

* ``POST /predict`` — a video upload (multipart field ``video``) → top-k, optional per-frame timeline;
* ``POST /streams`` → a session id; ``POST /streams/{id}/frames`` — one or more frames (a ``.npy``
  uint8 array ``(n, H, W, 3)`` or one PNG/JPEG image as the body) → the running prediction, the
  server keeping the stream state between requests; ``DELETE /streams/{id}``.

Sessions idle longer than ``session_ttl_s`` expire. Bad input — too large, too many frames, not a
video, not frames, unknown session — is a 4xx with a message, never a 500.

Layout: ``SharedModel`` is the predictor with the one lock every model call takes and the batcher
that runs concurrent sessions' stream steps as one batch; ``SessionStore`` owns the open sessions
(registry lock, expiry, limit); the routes are module-level functions on ``router`` that find
both, and the limits, on ``request.app.state``, which ``create_app`` fills. The routes' docstrings
open with a ``\\f`` line: FastAPI cuts operation descriptions there, so they stay out of the
OpenAPI schema; they say why, for whoever edits the code, not how to call it.
"""

from __future__ import annotations

import io
import math
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from movinet.inference.batching import StreamBatcher
from movinet.inference.guard import GuardSettings, RequestGuard
from movinet.inference.page import page_router
from movinet.inference.predictor import Prediction, Predictor, StreamSession, top_classes
from movinet.inference.video_input import check_frame_size, frame_batch


@dataclass(frozen=True)
class ServerLimits:
    max_upload_mb: float = 100.0
    max_frames: int = 256  # frames per request to a session
    session_ttl_s: float = 300.0
    max_sessions: int = 64
    max_uploads: int = 4  # concurrent POST /predict (their memory: max_uploads x max_upload_mb)
    body_timeout_s: float = 60.0  # a body must arrive within this (a trickling client is cut off)

    @property
    def max_bytes(self) -> int:
        """``max_upload_mb`` in bytes: the one limit on both uploads and frame bodies."""
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass
class SharedModel:
    """The predictor, the one lock that every use of its models takes, and the stream batcher.

    The models are not safe to run from several threads at once, so ``/predict`` and every model
    step run one at a time under ``lock``. A stream model's sessions step through ``batcher``
    (``movinet.inference.batching``): the waiting steps of concurrent sessions run as one batch,
    one model call under ``lock`` for all of them, which is what makes many live streams cheap.
    ``batching=False`` (or a base model, whose sessions classify whole clips) keeps the one-at-a-time
    path: a session steps the predictor's traced models (building one may trace them) under ``lock``.
    Batched, ``/predict`` runs on the batcher's thread too, so no request thread runs the model (on a
    small machine every thread that does keeps an OpenMP pool that slows all the others).
    """

    predictor: Predictor
    lock: threading.Lock = field(default_factory=threading.Lock)
    batching: bool = True
    batcher: StreamBatcher | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.batching:
            self.batcher = self.predictor.stream_batcher(self.lock)

    def predict(self, data: bytes, per_frame: bool, name: str) -> Prediction:
        if self.batcher is not None:
            return self.batcher.call(self.predictor.predict, data, per_frame=per_frame, name=name)
        with self.lock:
            return self.predictor.predict(data, per_frame=per_frame, name=name)

    def session(self, fps: float | None) -> StreamSession:
        with self.pushing():  # a batched session only makes zero states; an unbatched one may trace
            return self.predictor.session(source_fps=fps, batcher=self.batcher)

    def pushing(self) -> AbstractContextManager:
        """What a session's push holds besides its own lock: ``lock``, unless batched (the batcher
        takes it for each batch; holding it for the push would keep the other streams out of it)."""
        return nullcontext() if self.batcher is not None else self.lock


@dataclass
class _Live:
    """One open session: its own lock (pushes to one stream run in order) and its last use (for expiry)."""

    session: StreamSession
    clock: Callable[[], float] = time.monotonic  # the store's: tests set a clock instead of sleeping
    last_used: float = field(default=0.0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.last_used = self.clock()

    def push(self, key: str, frames: np.ndarray, model: SharedModel, top_k: int) -> dict:
        """Runs the frames and reads the answer under this session's lock (and, unbatched, the
        model's), so a concurrent push to the same session cannot change it between the push and
        the answer; pushes to different sessions of a stream model meet in the batcher."""
        with self.lock, model.pushing():
            rows = self.session.push(frames)
            self.last_used = self.clock()
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

    def __init__(
        self, model: SharedModel, ttl_s: float, max_sessions: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.model, self.ttl_s, self.max_sessions, self.clock = model, ttl_s, max_sessions, clock
        self._sessions: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def expire(self) -> None:
        """Drops the sessions idle longer than the TTL (run on each open and lookup: no timer thread)."""
        now = self.clock()
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
        live = _Live(self.model.session(fps), self.clock)  # under the model lock, not the registry's
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


async def _read_body(request: Request) -> bytes:
    """The request body; ``RequestGuard`` (``movinet.inference.guard``) has bounded its size and time."""
    return await request.body()


class Problem(BaseModel):
    """Every refusal's body: what was wrong and how to fix it."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ParameterProblem(BaseModel):
    """FastAPI's own 422 for parameters that fail validation: one entry per field."""

    detail: list[FieldError]


def _errors(**codes: str) -> dict:
    """OpenAPI ``responses`` for refusals (``e404="..."``): the clients and the fuzzer see them all."""
    out = {int(code[1:]): {"model": Problem, "description": text} for code, text in codes.items()}
    if 422 in out:  # our content checks (a message) or FastAPI's parameter validation (a list)
        out[422] = {"model": Problem | ParameterProblem, "description": codes["e422"]}
    return out


# Every route may meet the guard (movinet.inference.guard): token, body size and time.
router = APIRouter(
    responses=_errors(e401="no or a wrong bearer token", e408="the body arrived too slowly", e413="body too large")
)


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
        "sessions": len(state.store),  # open stream sessions (a load test checks they are all freed)
    }


@router.post(
    "/predict",
    responses=_errors(
        e400="not multipart form data", e422="not a video, or bad parameters", e429="too many uploads at once"
    ),
)
async def predict(request: Request, video: UploadFile, per_frame: bool = False, top_k: int = Query(5, ge=1)) -> dict:
    """
    \f
    One uploaded video's answer; the model runs in a worker thread so the server keeps serving.
    """
    state = request.app.state
    data = await video.read()  # at most the body limit: RequestGuard counted it while it arrived
    result = await run_in_threadpool(state.model.predict, bytes(data), per_frame, video.filename or "upload")
    return _prediction(result, state.model.predictor, top_k)


@router.post("/streams", status_code=201, responses=_errors(e422="bad parameters", e429="the session limit"))
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


@router.post("/streams/{key}/frames", responses=_errors(e404="no such session", e422="not frames, or bad parameters"))
async def push_frames(key: str, request: Request, top_k: int = Query(5, ge=1)) -> dict:
    """
    \f
    Frames into a session and its running answer; limits are checked before the model runs.
    """
    state = request.app.state
    live = state.store.get(key)
    body = await _read_body(request)
    frames = await run_in_threadpool(_decode_frames, body)  # off the event loop: /health stays responsive
    if len(frames) > state.limits.max_frames:
        raise HTTPException(413, f"{len(frames)} frames in one request; the limit is {state.limits.max_frames}")
    return await run_in_threadpool(live.push, key, frames, state.model, top_k)


@router.delete("/streams/{key}", status_code=204, response_class=Response, responses=_errors(e404="no such session"))
def close_stream(key: str, request: Request):
    """
    \f
    Ends a session now rather than at its expiry, freeing its place under the limit.
    """
    request.app.state.store.close(key)
    return Response(status_code=204)


def create_app(
    predictor: Predictor, limits: ServerLimits = ServerLimits(), model_uri: str = "", token: str | None = None
):
    """The app serving ``predictor``; its state (model, store, limits) lives on ``app.state``, so
    several apps in one process (tests, benchmarks) share no state. ``token``: the bearer token every
    route but ``/health`` (and the page) requires."""
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
    guard = GuardSettings(limits.max_bytes, limits.body_timeout_s, limits.max_uploads, token)
    app.add_middleware(RequestGuard, settings=guard)
    app.include_router(router)
    app.include_router(page_router)
    return app


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Listening beyond this machine without a token serves the model to anyone who can reach it."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token and not insecure:
        raise ValueError(
            f"--host {host} is reachable from other machines: give --token (or $MOVINET_API_TOKEN), "
            "or --insecure to serve without one"
        )


def serve(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServerLimits = ServerLimits(),
    tracking_uri: str | None = None,
    device: str = "cpu",
    token: str | None = None,
    insecure: bool = False,
) -> None:
    import uvicorn

    from movinet.inference.load import load_predictor

    check_exposure(host, token, insecure)
    app = create_app(load_predictor(model_uri, tracking_uri, device), limits, model_uri, token)
    uvicorn.run(app, host=host, port=port, log_level="info")
