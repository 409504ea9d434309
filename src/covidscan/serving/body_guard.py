"""An ASGI middleware that bounds request bodies in size (413) and time (408) before the app sees them.

The body is read into memory up to ``max_bytes`` (a declared ``Content-Length`` above it is refused at
once) within ``timeout_s`` for the whole body, then replayed to the application (which then holds the only reference to it). A slow or stalled
client therefore costs at most ``timeout_s`` of one concurrency slot and never ties up a worker thread;
an oversized upload never reaches the multipart parser. Paths in ``skip_paths`` (health, metrics) pass
through untouched. Pure ASGI: no framework import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def json_error(send: Send, status: int, message: str, code: str) -> None:
    """Send a complete JSON error response ``{"error", "code", "status"}``."""
    body = json.dumps({"error": message, "code": code, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """Bound request bodies: ``max_bytes`` (413) and ``timeout_s`` for the whole body (408).

    Args:
        app: the wrapped ASGI application.
        max_bytes: largest body accepted.
        timeout_s: time allowed to receive the whole body.
        skip_paths: paths passed through without buffering.
    """

    def __init__(self, app: Callable, max_bytes: int, timeout_s: float, skip_paths: Iterable[str] = ("/healthz", "/livez", "/readyz", "/metrics"),
                 parse_error_marker: str | None = None) -> None:  # fmt: skip
        self.app = app
        self.max_bytes = int(max_bytes)
        self.timeout_s = float(timeout_s)
        self.skip_paths = frozenset(skip_paths)
        self.parse_error_marker = parse_error_marker.encode() if parse_error_marker else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("path") in self.skip_paths or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await json_error(send, 400, "invalid Content-Length header", "bad_content_length")
            if size > self.max_bytes:
                return await json_error(send, 413, f"request body of {size} bytes exceeds serve.max_body_mb ({self.max_bytes} bytes)", "body_too_large")
        chunks: list[bytes] = []
        total = 0
        deadline = time.monotonic() + self.timeout_s
        more = True
        while more:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), timeout=left)
            except asyncio.TimeoutError:
                log.info("request body not received within %.0f s; answered 408", self.timeout_s)
                return await json_error(send, 408, f"request body not received within serve.body_timeout_s = {self.timeout_s:g} s", "body_timeout")
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                return await json_error(send, 413, f"request body exceeds serve.max_body_mb ({self.max_bytes} bytes)", "body_too_large")
            chunks.append(body)
            more = bool(message.get("more_body", False))
        body = [b"".join(chunks)]
        chunks.clear()

        async def replay() -> Message:
            # hands the body over once and keeps no reference to it: the framework may keep this callable
            # (in a request object, a context copy) long after the request ended (issue 15)
            if body:
                return {"type": "http.request", "body": body.pop(), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send if self.parse_error_marker is None else self._mapping_send(send))

    def _mapping_send(self, send: Send) -> Send:
        """Turn the framework's own 500 (its generic message, raised before the endpoint ran, e.g. an
        unparsable multipart part) into a 400: the endpoints answer their own errors with their own
        bodies, so that 500 can only come from a request the framework could not parse."""
        start: Message | None = None

        async def wrapped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message.get("status") == 500:
                start = message
                return
            if start is not None and message["type"] == "http.response.body":
                body = message.get("body", b"")
                if self.parse_error_marker in body and not message.get("more_body"):
                    log.info("the framework could not parse a request; answered 400")
                    await json_error(send, 400, "malformed request: the body does not match this endpoint's fields", "malformed_request")
                else:
                    await send(start)
                    await send(message)
                start = None
                return
            await send(message)

        return wrapped
