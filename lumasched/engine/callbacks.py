"""A receiver for the Dream Machine API's callbacks, turned into poller hints.

When a request carries ``callback_url``, Luma POSTs the generation JSON to it on
``dreaming``, ``completed`` and ``failed`` (retrying a non-200 answer three
times). Those POSTs are unauthenticated, so the receiver trusts nothing in them
but the id: each new ``(id, state)`` pair becomes ``poller.hint(id)``, and the
poller asks the API what really happened. The URL carries a random secret
path token; anything else is a 404.

Example::

    async with CallbackReceiver(poller.hint, port=8787,
                                public_url="https://tunnel.example") as receiver:
        scheduler = Scheduler(client, ..., callback_url=receiver.callback_url)
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Self

import attrs
from aiohttp import web

__all__ = ["CallbackInbox", "CallbackReceiver", "CallbackStats"]

logger = logging.getLogger(__name__)

_PATH = "/lumasched/callback"
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAX_BODY = 1 << 20


@attrs.frozen
class CallbackStats:
    received: int = 0
    """POSTs with the right token and a usable id."""
    duplicates: int = 0
    """Repeats of an ``(id, state)`` already seen (answered 200, no hint)."""
    rejected: int = 0
    """Wrong path token (404) or unreadable body (400)."""
    hints: int = 0
    """Hints passed to the poller."""


class CallbackInbox:
    """Verifies Luma's callbacks and turns each new ``(id, state)`` into a hint.

    Holds the secret path token and the dedupe memory; knows no server. The
    standalone ``CallbackReceiver`` and the routes mounted in a web app
    (``lumasched.web``) hand it the token from the URL and the raw body.
    """

    def __init__(self, poller_hint: Callable[[str], None], *, dedupe_size: int = 10_000) -> None:
        self._hint = poller_hint
        self.token = secrets.token_urlsafe(24)
        self._seen: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._dedupe_size = dedupe_size
        self._stats: dict[str, int] = dict.fromkeys(attrs.fields_dict(CallbackStats), 0)

    def __repr__(self) -> str:
        # The token is a secret: never in reprs or logs.
        return f"<CallbackInbox hints={self._stats['hints']}>"

    def url(self, base: str) -> str:
        """The callback URL for a route at ``base`` (e.g. ``https://app.example/luma/callback``)."""
        return f"{base.rstrip('/')}/{self.token}"

    def stats(self) -> CallbackStats:
        return CallbackStats(**self._stats)

    def receive(self, token: str, body: bytes) -> int:
        """Handle one POST whose path ended in ``token``; returns the HTTP status
        to answer (404 wrong token, 400 no usable id, else 200)."""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            self._stats["rejected"] += 1
            return 404
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        gid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(gid, str) or not _ID.fullmatch(gid):
            self._stats["rejected"] += 1
            return 400
        state = data.get("state") if isinstance(data, dict) else None
        key = (gid, state if isinstance(state, str) else None)
        self._stats["received"] += 1
        if key in self._seen:
            self._stats["duplicates"] += 1
            return 200
        self._seen[key] = None
        if len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        self._stats["hints"] += 1
        try:
            self._hint(gid)
        except Exception:
            logger.exception("callback hint for %s raised", gid)
        return 200


class CallbackReceiver:
    """An ``aiohttp.web`` server on ``host:port`` (0: a free port) for Luma's callbacks.

    ``callback_url`` is what to send in requests: ``public_url`` (an address that
    reaches this server, e.g. a tunnel) or ``http://host:port``, plus the secret
    path. Answers are immediate (200), so Luma never needs to retry.
    """

    def __init__(
        self,
        poller_hint: Callable[[str], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        dedupe_size: int = 10_000,
    ) -> None:
        self._inbox = CallbackInbox(poller_hint, dedupe_size=dedupe_size)
        self._host = host
        self._port = port
        self._public_url = public_url.rstrip("/") if public_url else None
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        # The token is a secret: never in reprs or logs.
        return f"<CallbackReceiver {self._host}:{self._port}>"

    @property
    def callback_url(self) -> str:
        """The URL to put in requests' ``callback_url`` (known once started)."""
        if self._public_url is not None:
            base = self._public_url
        else:
            if self._runner is None and self._port == 0:
                raise RuntimeError("the receiver has no port yet: enter it first")
            host = f"[{self._host}]" if ":" in self._host else self._host
            base = f"http://{host}:{self._port}"
        return self._inbox.url(base + _PATH)

    def stats(self) -> CallbackStats:
        return self._inbox.stats()

    async def __aenter__(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("the receiver is already running")
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post(_PATH + "/{token}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        status = self._inbox.receive(request.match_info["token"], await request.read())
        if status == 404:
            raise web.HTTPNotFound()
        if status == 400:
            return web.Response(status=400, text="expected a generation with an id")
        return web.Response(status=200)
