"""lumasched inside an ASGI application (FastAPI, Starlette, Quart, ...), with no
dependency on any framework: two small ASGI apps to mount.

::

    # app.state.luma is opened in the lifespan
    app.mount("/luma/callback", CallbackASGI(lambda: app.state.luma))
    app.mount("/luma/events", EventsASGI(lambda: app.state.luma))

``CallbackASGI`` answers ``POST /<token>``; ``EventsASGI`` answers
``GET /<key>`` (one job, SSE) and ``GET /`` (every job). In FastAPI a route can
also return ``StreamingResponse(sse_stream(luma, key), headers=SSE_HEADERS)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio

from lumasched.facade import Luma
from lumasched.web._sse import SSE_HEADERS, sse_stream

__all__ = ["CallbackASGI", "EventsASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
LumaSource = Luma | Callable[[], Luma]

MAX_CALLBACK_BODY = 1 << 20


def _resolve(source: LumaSource) -> Luma:
    return source if isinstance(source, Luma) else source()


def _last_segment(scope: Scope) -> str:
    """The path below the mount point: Starlette keeps the full ``path`` and puts
    the mount in ``root_path``; other servers strip it. Either way the token or
    key is the last segment."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return unquote(path.strip("/").rpartition("/")[2]) if path.strip("/") else ""


async def _answer(send: Send, status: int, text: str = "") -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Mounted apps never see the lifespan; run on their own they accept it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _MountedApp:
    """An ASGI app answering ``methods`` over HTTP for the ``Luma`` given (or
    returned by the function given: it is usually opened in a lifespan)."""

    methods: tuple[str, ...] = ()

    def __init__(self, luma: LumaSource) -> None:
        self._luma = luma

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope.get("method") not in self.methods:
            await _answer(send, 405, f"{', '.join(self.methods)} only")
        else:
            await self.handle(_resolve(self._luma), scope, receive, send)

    async def handle(self, luma: Luma, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class CallbackASGI(_MountedApp):
    """Luma's callbacks, verified against the secret path token and turned into
    poller hints, as ``CallbackReceiver`` does on its own port."""

    methods = ("POST",)

    async def handle(self, luma: Luma, scope: Scope, receive: Receive, send: Send) -> None:
        inbox = luma.callbacks
        if inbox is None:
            await _answer(send, 404)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_CALLBACK_BODY:
                await _answer(send, 413, "too large")
                return
            if not message.get("more_body", False):
                break
        status = inbox.receive(_last_segment(scope), bytes(body))
        await _answer(send, status, "expected a generation with an id" if status == 400 else "")


class EventsASGI(_MountedApp):
    """Job events as Server-Sent Events: ``GET /<key>`` follows one job from its
    current state to its end (404 for an unknown key), ``GET /`` every job."""

    methods = ("GET",)

    async def handle(self, luma: Luma, scope: Scope, receive: Receive, send: Send) -> None:
        key = _last_segment(scope) or None
        stream = sse_stream(luma, key)
        try:
            first = await anext(stream)
        except KeyError:
            await _answer(send, 404, f"no job {key!r}")
            return
        except StopAsyncIteration:
            first = b""
        headers = [(k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def pump() -> None:
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            async with anyio.create_task_group() as tg:

                async def run(fn: Callable[[], Awaitable[None]]) -> None:
                    await fn()
                    tg.cancel_scope.cancel()  # either side ending ends the response

                tg.start_soon(run, pump)
                tg.start_soon(run, watch_disconnect)
        except OSError:
            pass  # the client went away mid-write
        finally:
            await stream.aclose()
