"""``movinet serve``: an HTTP API over a predictor (FastAPI; the OpenAPI schema is at /docs).

* ``POST /predict`` — a video upload (multipart field ``video``) → top-k, optional per-frame timeline;
* ``POST /streams`` → a session id; ``POST /streams/{id}/frames`` — one or more frames (a ``.npy``
  uint8 array ``(n, H, W, 3)`` or one PNG/JPEG image as the body) → the running prediction, the
  server keeping the stream state between requests; ``DELETE /streams/{id}``.

Sessions idle longer than ``session_ttl_s`` expire. Bad input — too large, too many frames, not a
video, not frames, unknown session — is a 4xx with a message, never a 500.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from movinet.inference.predictor import Prediction, Predictor, StreamSession, top_classes
from movinet.inference.video_input import frame_batch


@dataclass(frozen=True)
class ServerLimits:
    max_upload_mb: float = 100.0
    max_frames: int = 256  # frames per request to a session
    session_ttl_s: float = 300.0
    max_sessions: int = 64


@dataclass
class _Live:
    session: StreamSession
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answer(predictor: Predictor, probs: np.ndarray, top_k: int) -> dict:
    top = [{"label": name, "probability": round(p, 6)} for name, p in top_classes(probs, predictor.class_names, top_k)]
    return {"label": top[0]["label"], "score": top[0]["probability"], "top": top}


def _prediction(result: Prediction, predictor: Predictor, top_k: int) -> dict:
    out = {"video": result.video, "frames": result.frames, "fps": result.fps,
           **_answer(predictor, result.probabilities, top_k)}
    if result.timeline:
        out["per_frame"] = [{"frame": r["frame"], "time": r["time"],
                             **_answer(predictor, r["probabilities"], 1)} for r in result.timeline]
    return out


def _decode_frames(body: bytes) -> np.ndarray:
    if body.startswith(b"\x93NUMPY"):
        try:
            frames = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"unreadable .npy array ({exc})") from None
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            frames = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise ValueError(f"image too large ({exc})") from None
        except (UnidentifiedImageError, OSError):
            raise ValueError("the body must be a .npy uint8 array (n, H, W, 3) or one PNG/JPEG image") from None
    return frame_batch(frames)  # checked here too: the frame limit counts them before the session runs


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


def create_app(predictor: Predictor, limits: ServerLimits = ServerLimits(), model_uri: str = ""):
    import movinet

    app = FastAPI(title="movinet", version=movinet.__version__,
                  description="MoViNet video classification: whole videos and live streams.")
    sessions: dict[str, _Live] = {}
    registry_lock, model_lock = threading.Lock(), threading.Lock()
    max_bytes = int(limits.max_upload_mb * 1024 * 1024)

    def expire() -> None:
        now = time.monotonic()
        with registry_lock:
            for key in [k for k, s in sessions.items() if now - s.last_used > limits.session_ttl_s]:
                del sessions[key]

    @app.exception_handler(ValueError)
    async def bad_input(request: Request, exc: ValueError):
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_uri, "classes": predictor.class_names,
                "streaming": predictor.streaming, "members": len(predictor.members),
                "preprocessing": predictor.prep.to_dict()}

    @app.post("/predict")
    async def predict(video: UploadFile, per_frame: bool = False, top_k: int = Query(5, ge=1)) -> dict:
        data = await video.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"upload larger than {limits.max_upload_mb:g} MB")
        name = video.filename or "upload"

        def run() -> Prediction:
            with model_lock:
                return predictor.predict(bytes(data), per_frame=per_frame, name=name)

        result = await run_in_threadpool(run)
        return _prediction(result, predictor, top_k)

    @app.post("/streams", status_code=201)
    def open_stream(fps: float | None = Query(None, gt=0, description="the source's frame rate")) -> dict:
        expire()
        full = HTTPException(429, f"{limits.max_sessions} sessions are open; close one or wait")
        with registry_lock:
            if len(sessions) >= limits.max_sessions:
                raise full
        with model_lock:  # building a session traces the model: not while others use it or the registry
            session = _Live(predictor.session(source_fps=fps))
        with registry_lock:
            if len(sessions) >= limits.max_sessions:
                raise full
            key = uuid.uuid4().hex
            sessions[key] = session
        return {"id": key, "expires_after_idle_s": limits.session_ttl_s}

    def live(key: str) -> _Live:
        expire()
        with registry_lock:
            found = sessions.get(key)
        if found is None:
            raise HTTPException(404, f"no stream session {key!r} (closed or expired)")
        return found

    @app.post("/streams/{key}/frames")
    async def push_frames(key: str, request: Request, top_k: int = Query(5, ge=1)) -> dict:
        state = live(key)
        frames = _decode_frames(await _read_body(request, max_bytes, limits.max_upload_mb))
        if len(frames) > limits.max_frames:
            raise HTTPException(413, f"{len(frames)} frames in one request; the limit is {limits.max_frames}")

        def run() -> dict:
            with state.lock, model_lock:  # the answer is read under the lock that guards the session
                rows = state.session.push(frames)
                state.last_used = time.monotonic()
                out = {"id": key, "frames_received": state.session.received, "new_predictions": len(rows)}
                if state.session.last is not None:
                    position, probs = state.session.last
                    out.update(frame=position, **_answer(predictor, probs, top_k))
                return out

        return await run_in_threadpool(run)

    @app.delete("/streams/{key}", status_code=204, response_class=Response)
    def close_stream(key: str):
        live(key)
        with registry_lock:
            sessions.pop(key, None)
        return Response(status_code=204)

    app.state.sessions = sessions
    return app


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 8000, limits: ServerLimits = ServerLimits(),
          tracking_uri: str | None = None) -> None:
    import uvicorn

    from movinet.inference.load import load_predictor

    app = create_app(load_predictor(model_uri, tracking_uri), limits, model_uri)
    uvicorn.run(app, host=host, port=port, log_level="info")
