"""The whole-request timeout of the HTTP front, with a timer that lets go of the request when it ends.

BentoML 1.4's ``TimeoutMiddleware`` (the service's ``traffic.timeout``) schedules
``loop.call_later(timeout, ...)`` for every request and never cancels it. An asyncio timer keeps a
copy of the context variables it was scheduled in until it fires: here for 300 s after the answer.
On a keep-alive connection uvicorn starts the next request from inside the previous one, so that copy
holds BentoML's request variable of the previous request, and through it the request's parsed form
and its body (a 20 MB CT series). Those live timers also keep asyncio from purging the cancelled
timers of finished requests (it purges only once more than half of its scheduled timers are
cancelled), which hold the same. In the issue-15 soak the front worker's RSS therefore followed the
request rate x 300 s x the body size (490 MB -> 1.9 GB in 10 minutes).

:class:`RequestTimeout` does the same job as BentoML's middleware (the request task is cancelled and
answered 504 when no response has started within ``timeout`` seconds) with a timer scheduled in an
empty context and cancelled as soon as the request ends. :func:`install` makes BentoML build it in
place of its own (``bento/service.py`` calls it before the service is defined); this is a workaround
for BentoML, not a change of behaviour.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from covidscan.serving.body_guard import Message, Receive, Scope, Send, json_error

log = logging.getLogger(__name__)


class RequestTimeout:
    """Answer 504 (and cancel the request) when no response has started within ``timeout`` seconds.

    Args:
        app: the wrapped ASGI application.
        timeout: seconds from the request's arrival to the start of its response.
    """

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = float(timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = loop.create_future()

        def expire() -> None:
            if not started.done():
                started.set_exception(asyncio.TimeoutError())

        # an empty context: the timer holds nothing of the request while it is pending
        timer = loop.call_later(self.timeout, expire, context=contextvars.Context())

        async def watched_send(message: Message) -> None:
            if not started.done():
                started.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, watched_send))
        task.add_done_callback(lambda _: started.done() or started.set_result(None))
        try:
            try:
                await started
            except asyncio.TimeoutError:
                if task.cancel():
                    log.warning("no response within %g s; the request was cancelled and answered 504", self.timeout)
                    if scope.get("type") == "http":
                        await json_error(send, 504, f"the request was not answered within {self.timeout:g} s", "request_timeout")
                    return
            await task
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()


def install() -> bool:
    """Make BentoML use :class:`RequestTimeout` for ``traffic.timeout`` in this process.

    BentoML's app factory imports ``TimeoutMiddleware`` from ``bentoml._internal.server.http.traffic``
    when it builds the app, after the service module was imported; replacing that name there is enough.
    Returns False (and changes nothing) when this BentoML has no such middleware.
    """
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:
        return False
    if not hasattr(traffic, "TimeoutMiddleware"):
        log.warning("bentoml._internal.server.http.traffic.TimeoutMiddleware not found; BentoML's own request timeout stays")
        return False
    traffic.TimeoutMiddleware = RequestTimeout
    return True
