"""Issue 15: nothing of a finished request stays alive in the front (its body, its context variables).

The front worker's RSS grew with request rate x body size x BentoML's 300 s traffic timeout: BentoML's
``TimeoutMiddleware`` left a timer per request that kept the request's context (BentoML's request
object, the body BodyGuard replays) for the whole timeout. These tests run the two middlewares in
process, on a real event loop, with real bodies.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import time
import tracemalloc
import weakref

import pytest

from covidscan.serving.body_guard import BodyGuard
from covidscan.serving.request_timeout import RequestTimeout, install

SCOPE = {"type": "http", "method": "POST", "path": "/ct", "headers": []}


def _messages(body: bytes, chunk: int = 64 * 1024) -> list[dict]:
    return [{"type": "http.request", "body": body[i : i + chunk], "more_body": i + chunk < len(body)} for i in range(0, len(body), chunk)]


def test_body_guard_keeps_no_reference_to_the_body_after_handing_it_over():
    """The framework keeps the ``receive`` it was given (in its request object, in context copies) after
    the request; the body must not stay reachable through it."""
    body = bytes(range(256)) * (32 * 1024)  # 8 MB, received in 128 chunks
    incoming = _messages(body)
    kept = []

    async def app(scope, receive, send):
        kept.append(receive)  # what BentoML's request object does
        message = await receive()
        assert len(message["body"]) == len(body) and not message["more_body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> int:
        queue = list(incoming)

        async def receive():
            return queue.pop(0) if queue else {"type": "http.disconnect"}

        async def send(message):
            pass

        tracemalloc.start()
        try:
            await BodyGuard(app, max_bytes=64 * 1024 * 1024, timeout_s=30)(SCOPE, receive, send)
            gc.collect()
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    held = asyncio.run(main())
    assert kept, "the app was not called"
    assert held < 1024 * 1024, f"{held / 2**20:.1f} MB still held after the request (the 8 MB body kept by the replayed receive?)"


class _Marker:
    """Something a request puts in a context variable (weak-referenceable)."""


_REQUEST: contextvars.ContextVar[_Marker | None] = contextvars.ContextVar("request", default=None)


def _context_kept_after_the_request(middleware_cls, timeout: float = 300.0) -> bool:
    """Run one request through ``middleware_cls`` with a marker in a context variable (as on a keep-alive
    connection, where the previous request's context is current); True when the marker is still alive
    after the request ended and every reference of the test was dropped."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> bool:
        marker = _Marker()
        ref = weakref.ref(marker)
        _REQUEST.set(marker)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            pass

        await middleware_cls(app, timeout=timeout)(SCOPE, receive, send)
        _REQUEST.set(None)
        del marker
        for _ in range(3):  # the callbacks the finished request scheduled run
            await asyncio.sleep(0)
        gc.collect()
        return ref() is not None

    return asyncio.run(main())


def test_request_timeout_keeps_nothing_of_a_finished_request():
    assert not _context_kept_after_the_request(RequestTimeout)


def test_bentoml_timeout_middleware_keeps_the_request_context_for_the_whole_timeout():
    """Why RequestTimeout exists. When this fails, BentoML cancels its timer: drop request_timeout.install()."""
    traffic = pytest.importorskip("bentoml._internal.server.http.traffic")
    if traffic.TimeoutMiddleware is RequestTimeout:
        pytest.skip("install() replaced it in this process")
    assert _context_kept_after_the_request(traffic.TimeoutMiddleware)


def test_request_timeout_answers_504_and_cancels_a_request_that_is_not_answered_in_time():
    cancelled = []

    async def slow(scope, receive, send):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> list[dict]:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.disconnect"}

        await RequestTimeout(slow, timeout=0.2)(SCOPE, receive, send)
        await asyncio.sleep(0)
        return sent

    start = time.monotonic()
    sent = asyncio.run(main())
    assert time.monotonic() - start < 5
    assert sent[0]["status"] == 504 and b'"code": "request_timeout"' in sent[1]["body"]
    assert cancelled == [True]


def test_request_timeout_returns_when_the_app_ends_without_answering():
    """An app that returns without a response (the client went away) does not hold the request for the timeout."""

    async def silent(scope, receive, send):
        return None

    async def main() -> None:
        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            raise AssertionError("nothing should be sent")

        await RequestTimeout(silent, timeout=30)(SCOPE, receive, send)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 5


def test_install_makes_bentoml_build_request_timeout():
    base_app = pytest.importorskip("bentoml._internal.server.base_app")
    traffic = pytest.importorskip("bentoml._internal.server.http.traffic")
    original = traffic.TimeoutMiddleware

    class Factory(base_app.BaseAppFactory):
        @property
        def name(self) -> str:
            return "test"

    try:
        assert install()
        classes = [m.cls for m in Factory(timeout=300).middlewares]
        assert RequestTimeout in classes and original not in classes
    finally:
        traffic.TimeoutMiddleware = original
