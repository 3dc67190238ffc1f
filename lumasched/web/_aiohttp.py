"""lumasched inside an ``aiohttp.web`` application: the ``Luma`` in the app's
lifetime, Luma's callbacks on a route of the app, job events as SSE.

::

    app = web.Application()
    app.cleanup_ctx.append(luma_context(out_dir="out",
                                        callback_base_url="https://app.example/luma/callback"))
    app.router.add_post("/luma/callback/{token}", callback_handler)
    app.router.add_get("/jobs/{key}/events", events_handler)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from lumasched.facade import Luma
from lumasched.web._sse import SSE_HEADERS, sse_stream

__all__ = [
    "LUMA_KEY",
    "callback_app",
    "callback_handler",
    "events_handler",
    "luma_context",
]

LUMA_KEY = web.AppKey("lumasched.luma", Luma)
"""Where ``luma_context`` puts the ``Luma``: ``request.config_dict[LUMA_KEY]``."""

MAX_CALLBACK_BODY = 1 << 20
"""A generation is a few KiB; anything near this is not one of Luma's callbacks."""


def luma_context(**options: Any) -> Callable[[web.Application], AsyncIterator[None]]:
    """For ``app.cleanup_ctx``: a ``Luma(**options)`` open while the app runs,
    stored at ``app[LUMA_KEY]``. At shutdown it stops creating and hands what is in
    flight to the journal (``on_exit="defer"``); the next start resumes it."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with Luma(**options) as luma:
            app[LUMA_KEY] = luma
            yield

    return context


def _luma(request: web.Request) -> Luma:
    try:
        return request.config_dict[LUMA_KEY]
    except KeyError:
        raise RuntimeError(
            "no Luma on this app: add lumasched.web.luma_context(...) to app.cleanup_ctx "
            "(or set app[lumasched.web.LUMA_KEY])"
        ) from None


async def callback_handler(request: web.Request) -> web.Response:
    """``POST .../{token}``: a callback from Luma, verified against the secret path
    token and turned into a poller hint (the poller asks the API what happened)."""
    inbox = _luma(request).callbacks
    if inbox is None:
        raise web.HTTPNotFound()  # callbacks were not configured (no callback_base_url)
    body = await request.content.read(MAX_CALLBACK_BODY + 1)
    if len(body) > MAX_CALLBACK_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_CALLBACK_BODY, actual_size=len(body))
    status = inbox.receive(request.match_info.get("token", ""), body)
    if status == 404:
        raise web.HTTPNotFound()
    if status == 400:
        return web.Response(status=400, text="expected a generation with an id")
    return web.Response(status=200)


def callback_app() -> web.Application:
    """A sub-application with the callback route, for
    ``app.add_subapp("/luma/callback", callback_app())``."""
    sub = web.Application(client_max_size=MAX_CALLBACK_BODY)
    sub.router.add_post("/{token}", callback_handler)
    return sub


async def events_handler(request: web.Request) -> web.StreamResponse:
    """``GET`` with a ``{key}`` in the route (or ``?key=``): that job's events as
    SSE, from its current state to its end (404 for an unknown key); without a
    key, every job's events until the client leaves."""
    luma = _luma(request)
    key = request.match_info.get("key") or request.query.get("key")
    stream = sse_stream(luma, key)
    try:
        first = await anext(stream)
    except KeyError:
        raise web.HTTPNotFound(text=f"no job {key!r}") from None
    except StopAsyncIteration:
        first = b""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    try:
        await response.write(first)
        async for chunk in stream:
            await response.write(chunk)
    except ConnectionResetError:
        pass  # the page went away
    finally:
        await stream.aclose()
    return response
