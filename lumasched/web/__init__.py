"""lumasched inside a web app: Luma's callbacks mounted on the app's own routes
(verified, turned into poller hints) and job events as Server-Sent Events, for
``aiohttp.web`` and for any ASGI framework (FastAPI, Starlette). See
docs/web-apps.md.
"""

from lumasched.web._aiohttp import (
    LUMA_KEY,
    callback_app,
    callback_handler,
    events_handler,
    luma_context,
)
from lumasched.web._asgi import CallbackASGI, EventsASGI
from lumasched.web._sse import DEFAULT_HEARTBEAT, SSE_HEADERS, job_snapshot, sse_stream

__all__ = [
    "DEFAULT_HEARTBEAT",
    "LUMA_KEY",
    "SSE_HEADERS",
    "CallbackASGI",
    "EventsASGI",
    "callback_app",
    "callback_handler",
    "events_handler",
    "job_snapshot",
    "luma_context",
    "sse_stream",
]
