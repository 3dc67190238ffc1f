"""lumasched.web: callbacks mounted in the user's app (aiohttp and ASGI) become
verified hints; job events stream as SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from lumasched import ImageRequest, JobState, Luma, VideoRequest
from lumasched.emulator import Emulator
from lumasched.web import (
    LUMA_KEY,
    CallbackASGI,
    EventsASGI,
    callback_app,
    events_handler,
    luma_context,
)
from tests._engine_fixtures import API_KEY, emulator
from tests._sockets import bound_socket


@asynccontextmanager
async def aiohttp_app(emu: Emulator, out: Path) -> AsyncIterator[tuple[str, web.Application]]:
    """A user's aiohttp app: Luma in cleanup_ctx, the callback sub-app, SSE route."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    app = web.Application()
    app.cleanup_ctx.append(
        luma_context(
            out_dir=out,
            api_key=API_KEY,
            base_url=emu.base_url,
            callback_base_url=f"{base}/luma/callback",
        )
    )
    app.add_subapp("/luma/callback", callback_app())
    app.router.add_get("/jobs/{key}/events", events_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield base, app
    finally:
        await runner.cleanup()
        sock.close()


async def _sse(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    messages = []
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            if line.startswith(b"data: "):
                messages.append(json.loads(line[6:]))
    return messages


async def test_aiohttp_callbacks_become_hints_and_sse_follows_a_job(tmp_path: Path) -> None:
    """Callbacks reach the mounted route and hint the poller; SSE streams the job
    from its current state to completed with its file."""
    async with (
        emulator(latency=0.3) as emu,
        aiohttp_app(emu, tmp_path) as (base, app),
        aiohttp.ClientSession() as http,
    ):
        luma = app[LUMA_KEY]
        assert luma.callback_url is not None and luma.callback_url.startswith(base)
        job = luma.submit(VideoRequest("a teddy bear"), key="bear")
        with anyio.fail_after(15):
            events = await _sse(http, f"{base}/jobs/bear/events")
            await job
        assert events[0]["key"] == "bear"
        assert events[-1]["state"] == "completed" and Path(events[-1]["path"]).is_file()
        assert "submitted" in [e["state"] for e in events]
        stats = luma.callbacks.stats() if luma.callbacks else None
        assert stats is not None and stats.hints >= 1 and stats.rejected == 0
        # a job that has ended: its final state at once
        assert [e["state"] for e in await _sse(http, f"{base}/jobs/bear/events")] == ["completed"]
        async with http.get(f"{base}/jobs/nobody/events") as response:
            assert response.status == 404


async def test_aiohttp_callback_route_rejects_wrong_token_and_bad_bodies(tmp_path: Path) -> None:
    """A guessed token is a 404, a body without an id a 400; neither hints."""
    async with (
        emulator() as emu,
        aiohttp_app(emu, tmp_path) as (base, app),
        aiohttp.ClientSession() as http,
    ):
        luma = app[LUMA_KEY]
        assert luma.callback_url is not None
        async with http.post(f"{base}/luma/callback/guess", json={"id": "x"}) as response:
            assert response.status == 404
        async with http.post(luma.callback_url, data=b"not json") as response:
            assert response.status == 400
        async with http.post(luma.callback_url, json={"id": "abc", "state": "dreaming"}) as r:
            assert r.status == 200
        assert luma.callbacks is not None
        stats = luma.callbacks.stats()
        assert (stats.rejected, stats.received, stats.hints) == (2, 1, 1)
        assert luma.callbacks.token not in repr(luma.callbacks)


class _ASGIClient:
    """Calls an ASGI app directly: one request, the response collected."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(
        self, method: str, path: str, body: bytes = b"", *, root_path: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        sent = False
        out: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
                out["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
            else:
                out["body"] += message.get("body", b"")

        scope = {
            "type": "http",
            "method": method,
            "path": root_path + path,
            "root_path": root_path,
            "query_string": b"",
            "headers": [],
        }
        with anyio.fail_after(10):
            await self.app(scope, receive, send)
        return out["status"], out["headers"], out["body"]


async def test_asgi_callbacks_hint_through_a_starlette_style_mount(tmp_path: Path) -> None:
    """CallbackASGI verifies the token under a mount's root_path and hints the poller."""
    async with (
        emulator() as emu,
        Luma(
            tmp_path,
            api_key=API_KEY,
            base_url=emu.base_url,
            callback_base_url="https://app.example/luma/callback",
        ) as luma,
    ):
        assert luma.callbacks is not None and luma.callback_url is not None
        client = _ASGIClient(CallbackASGI(lambda: luma))
        token = luma.callback_url.rsplit("/", 1)[1]
        body = json.dumps({"id": "gen-1", "state": "completed"}).encode()
        ok = await client.request("POST", f"/{token}", body, root_path="/luma/callback")
        assert ok[0] == 200
        assert (await client.request("POST", "/nope", body, root_path="/luma/callback"))[0] == 404
        assert (await client.request("POST", f"/{token}", b"{}"))[0] == 400
        assert (await client.request("GET", f"/{token}"))[0] == 405
        stats = luma.callbacks.stats()
        assert (stats.hints, stats.rejected) == (1, 2)


async def test_asgi_events_stream_a_job_to_its_end(tmp_path: Path) -> None:
    """EventsASGI streams one job's states ending in completed; unknown keys are 404."""
    async with (
        emulator(latency=0.1) as emu,
        Luma(tmp_path, api_key=API_KEY, base_url=emu.base_url) as luma,
    ):
        client = _ASGIClient(EventsASGI(luma))
        luma.submit(ImageRequest("an otter"), key="otter")
        status, headers, body = await client.request("GET", "/otter")
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        states = [
            json.loads(line[6:])["state"]
            for line in body.decode().splitlines()
            if line.startswith("data: ")
        ]
        assert states[-1] == JobState.COMPLETED.value
        assert (await client.request("GET", "/ghost"))[0] == 404
