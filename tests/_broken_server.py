"""A tiny Dream Machine API that misbehaves on purpose, for the "trust at the edges" tests.

Each create's prompt names how its generation misbehaves (``"... mode:no-asset"``);
``set_mode`` changes it later. The modes:

=================  ================================================================
``ok``             completes; a small asset with Content-Length
``huge-body``      a status read answers an endless non-JSON body
``huge-declared``  a status read declares a 600 MB body
``trickle``        a status read answers one byte every 50 ms, for ever
``redirect``       a status read answers a redirect to itself
``no-asset``       completes without an asset URL
``late-asset``     completes; the asset URL appears from the third status read on
``odd-state``      stays in the undocumented state ``paused``
``fat``            completes; the answer carries 256 KiB of extra fields
``endless-asset``  completes; its asset has no length and never ends
``huge-asset``     completes; its asset declares 10**12 bytes
``redirect-asset`` completes; its asset URL redirects to itself
``trickle-asset``  completes; its asset comes one byte every 50 ms, for ever
=================  ================================================================
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest_asyncio
from aiohttp import web

ASSET = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16
"""The small asset of an ``ok`` generation (4 KiB and a bit)."""

_CHUNK = b"x" * 65536


class BrokenAPI:
    """The server (``await start()`` / ``await close()``); ``base_url`` for clients."""

    def __init__(self) -> None:
        self.modes: dict[str, str] = {}
        self.gets: Counter[str] = Counter()
        self.creates = 0
        self.sent = 0
        """Bytes of endless or huge bodies written so far."""
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base = ""

    @property
    def base_url(self) -> str:
        return self.base

    def set_mode(self, generation_id: str, mode: str) -> None:
        self.modes[generation_id] = mode

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/generations", self._list)
        app.router.add_get("/generations/{id}", self._get)
        app.router.add_post("/{tail:.*}", self._create)
        app.router.add_get("/asset/{mode}/{id}", self._asset)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> BrokenAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- routes --------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = str(body.get("prompt", ""))
        mode = prompt.rsplit("mode:", 1)[1].split()[0] if "mode:" in prompt else "ok"
        gid = f"gen-{next(self._ids):04d}"
        self.modes[gid] = mode
        self.creates += 1
        return web.json_response(self._generation(gid, "queued"), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        # Nothing listed: the poller falls back to reading each generation.
        return web.json_response({"generations": [], "count": 0, "has_more": False})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        gid = request.match_info["id"]
        mode = self.modes.get(gid)
        if mode is None:
            return web.json_response({"detail": "Generation not found"}, status=404)
        self.gets[gid] += 1
        if mode == "huge-body":
            return await self._endless(request, content_type="text/html")
        if mode == "huge-declared":
            response = web.StreamResponse(headers={"Content-Length": str(600 * 1024 * 1024)})
            await response.prepare(request)
            await self._pour(response, 4)
            return response
        if mode == "trickle":
            return await self._trickle(request, content_type="application/json")
        if mode == "redirect":
            raise web.HTTPFound(str(request.url))
        if mode == "odd-state":
            return web.json_response(self._generation(gid, "paused"))
        if mode == "no-asset" or (mode == "late-asset" and self.gets[gid] < 3):
            return web.json_response(self._generation(gid, "completed", assets={}))
        generation = self._generation(gid, "completed")
        if mode == "fat":
            generation["extra_blob"] = "z" * (256 * 1024)
            generation["request"] = {"prompt": "y" * (64 * 1024)}
        return web.json_response(generation)

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        if mode == "endless-asset":
            return await self._endless(request, content_type="video/mp4")
        if mode == "huge-asset":
            response = web.StreamResponse(headers={"Content-Length": str(10**12)})
            await response.prepare(request)
            await self._pour(response, 4)
            return response
        if mode == "redirect-asset":
            raise web.HTTPFound(str(request.url))
        if mode == "trickle-asset":
            return await self._trickle(request, content_type="video/mp4")
        return web.Response(body=ASSET, content_type="video/mp4")

    # -- helpers -------------------------------------------------------------

    def _generation(self, gid: str, state: str, *, assets: Any = None) -> dict[str, Any]:
        mode = self.modes[gid]
        data: dict[str, Any] = {
            "id": gid,
            "state": state,
            "generation_type": "video",
            "created_at": datetime.now(UTC).isoformat(),
            "failure_reason": None,
        }
        if state == "completed":
            kind = mode if mode.endswith("-asset") and mode != "late-asset" else "ok"
            data["assets"] = (
                {"video": f"{self.base}/asset/{kind}/{gid}.mp4"} if assets is None else assets
            )
        return data

    async def _endless(self, request: web.Request, *, content_type: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await self._pour(response, None)
        return response

    async def _trickle(self, request: web.Request, *, content_type: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            while True:
                await response.write(b" ")
                self.sent += 1
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            return response

    async def _pour(self, response: web.StreamResponse, chunks: int | None) -> None:
        """Write chunks until ``chunks`` are written (``None``: until the client leaves)."""
        for _ in range(chunks) if chunks is not None else itertools.count():
            try:
                await response.write(_CHUNK)
            except (ConnectionError, RuntimeError):
                return
            self.sent += len(_CHUNK)


class ThreadedBrokenAPI:
    """A ``BrokenAPI`` serving from its own thread (for the in-process CLI tests)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.api = BrokenAPI()
        self._call(self.api.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def base_url(self) -> str:
        return self.api.base_url

    def close(self) -> None:
        self._call(self.api.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest_asyncio.fixture
async def api() -> AsyncIterator[BrokenAPI]:
    async with BrokenAPI() as server:
        yield server


def item(item_id: str, mode: str, **fields: Any) -> dict[str, Any]:
    """A manifest item whose generation misbehaves in ``mode``."""
    return {
        "id": item_id,
        "model": "ray-flash-2",
        "prompt": f"shot {item_id} mode:{mode}",
        **fields,
    }


def dumps(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(i) + "\n" for i in items)
