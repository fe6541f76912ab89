"""What every request to ``movinet serve`` passes before any route runs (an ASGI middleware).

* **Access**: with a token, every route but ``/health`` and the test page ``/`` needs
  ``Authorization: Bearer <token>`` (compared in constant time); 401 otherwise.
* **Body size, while receiving**: a declared ``Content-Length`` over the limit is refused at once, and
  an undeclared (chunked) body is counted as it arrives, so no route, and not Starlette's multipart
  parser either, ever spools more than the limit (413).
* **Slow bodies**: a body that takes longer than ``body_timeout_s`` to arrive is cut off (408), so a
  client trickling bytes cannot hold a worker and its buffer open indefinitely.
* **Concurrent uploads**: at most ``max_uploads`` ``POST /predict`` at a time (429 beyond), which
  bounds their memory to ``max_uploads`` x the size limit.

Refusals are JSON ``{"detail": ...}`` like every other 4xx of the API.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import HTTPException

NO_TOKEN = "missing or wrong bearer token (Authorization: Bearer <token>)"
OPEN_PATHS = ("/health", "/")  # no data behind them: the page is static, health shows what is served
UPLOAD_PATHS = ("/predict",)


@dataclass(frozen=True)
class GuardSettings:
    max_bytes: int
    body_timeout_s: float = 60.0
    max_uploads: int = 4
    token: str | None = None


class RequestGuard:
    def __init__(self, app, settings: GuardSettings) -> None:
        self.app, self.settings = app, settings
        self.uploads = 0  # the event loop is single-threaded: a plain counter is safe

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await _reply(send, *refusal)
        upload = scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
        if upload and self.uploads >= self.settings.max_uploads:
            return await _reply(send, 429, f"{self.settings.max_uploads} uploads are in progress; retry shortly")
        self.uploads += upload
        try:
            await self.app(scope, _limited(receive, self.settings), send)
        finally:
            self.uploads -= upload

    def _refusal(self, scope) -> tuple[int, str, dict] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = self.settings.token
        if token and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "")
            if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].encode(), token.encode())):
                return (
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <token>)",
                    {"www-authenticate": "Bearer"},
                )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_bytes:
            return 413, f"body larger than {_mb(self.settings.max_bytes)} MB", {}
        return None


def _limited(receive, settings: GuardSettings):
    """``receive`` that counts body bytes and watches the clock until the body is complete."""
    state = {"bytes": 0, "done": False, "start": time.monotonic()}

    async def guarded():
        if state["done"]:
            return await receive()  # after the body: disconnect notices, no limits
        remaining = settings.body_timeout_s - (time.monotonic() - state["start"])
        try:
            message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise HTTPException(408, f"the body took longer than {settings.body_timeout_s:g} s to arrive") from None
        if message["type"] == "http.request":
            state["bytes"] += len(message.get("body", b""))
            state["done"] = not message.get("more_body", False)
            if state["bytes"] > settings.max_bytes:
                raise HTTPException(413, f"body larger than {_mb(settings.max_bytes)} MB")
        return message

    return guarded


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g}"


async def _reply(send, status: int, detail: str, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
