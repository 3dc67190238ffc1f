"""The web app examples (aiohttp and FastAPI), started in-process on the emulator
and driven over HTTP: submit, status, SSE, the file, callbacks, errors, shutdown
and resume, and a few hundred requests with memory staying flat."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import psutil
import pytest
from aiohttp import web

from lumasched.emulator import Emulator
from lumasched.limits import FamilyLimits, Limits
from tests._engine_fixtures import API_KEY
from tests._sockets import bound_socket

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Roomy limits: these tests measure the app, not the limiter.
ROOMY = Limits(
    video=FamilyLimits(concurrency=20, requests=400, per_seconds=1.0),
    image=FamilyLimits(concurrency=100, requests=2000, per_seconds=1.0),
)


def _example(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serve(kind: str, out: Path, emu: Emulator) -> AsyncIterator[str]:
    """The example app ``kind`` on a free port, with callbacks to itself."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    options: dict[str, Any] = {"api_key": API_KEY, "base_url": emu.base_url, "limits": ROOMY}
    if kind == "aiohttp":
        app = _example("web_aiohttp").make_app(out, public_url=base, **options)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            yield base
        finally:
            await runner.cleanup()
            sock.close()
    else:
        import uvicorn

        app = _example("web_fastapi").make_app(out, public_url=base, **options)
        config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            with anyio.fail_after(10):
                while not server.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
            yield base
        finally:
            server.should_exit = True
            await task
            sock.close()


KINDS = ["aiohttp", "fastapi"]


async def _events(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    out = []
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


@pytest.mark.parametrize("kind", KINDS)
async def test_example_app_end_to_end(kind: str, tmp_path: Path) -> None:
    """Submit, watch its events to completed, fetch status and file; bad input is a
    422 naming the field; callbacks reached the app."""
    async with (
        Emulator(fixed_latency=0.2, limits=ROOMY, api_key=API_KEY) as emu,
        serve(kind, tmp_path, emu) as base,
        aiohttp.ClientSession() as http,
    ):
        body = {"kind": "video", "prompt": "a teddy bear", "key": "bear"}
        async with http.post(f"{base}/generate", json=body) as response:
            assert response.status == 202
            job = await response.json()
        assert job["key"] == "bear" and job["events_url"] == "jobs/bear/events"
        with anyio.fail_after(15):
            events = await _events(http, f"{base}/{job['events_url']}")
        assert events[-1]["state"] == "completed"
        async with http.get(f"{base}/jobs/bear") as response:
            status = await response.json()
        assert status["state"] == "completed" and status["sha256"]
        async with http.get(f"{base}/jobs/bear/file") as response:
            assert response.status == 200
            assert await response.read() == Path(status["path"]).read_bytes()
        bad = {"kind": "image", "prompt": "a cat", "aspect_ratio": "2:1"}
        async with http.post(f"{base}/generate", json=bad) as response:
            assert response.status == 422
            problems = (await response.json())["problems"]
        assert problems[0]["field"] == "aspect_ratio"
        async with http.get(f"{base}/jobs/ghost") as response:
            assert response.status == 404
        async with http.get(f"{base}/jobs/ghost/events") as response:
            assert response.status == 404
    assert emu.inspect.creates_total == 1
    assert emu.inspect.callbacks_sent >= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_example_app_shutdown_hands_work_to_the_next_start(kind: str, tmp_path: Path) -> None:
    """Stopping the app while a video dreams leaves it in the journal; the next start
    finishes it without creating it again."""
    async with Emulator(fixed_latency=1.0, limits=ROOMY, api_key=API_KEY) as emu:
        async with serve(kind, tmp_path, emu) as base, aiohttp.ClientSession() as http:
            body = {"kind": "video", "prompt": "a slow teddy bear", "key": "slow"}
            async with http.post(f"{base}/generate", json=body) as response:
                assert response.status == 202
            with anyio.fail_after(10):
                while emu.inspect.creates_total < 1:
                    await anyio.sleep(0.02)
        async with serve(kind, tmp_path, emu) as base, aiohttp.ClientSession() as http:
            with anyio.fail_after(15):
                events = await _events(http, f"{base}/jobs/slow/events")
        assert events[-1]["state"] == "completed"
    assert emu.inspect.creates_total == 1


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
async def test_example_app_memory_stays_flat(kind: str, tmp_path: Path) -> None:
    """Hundreds of generate and status requests: resident memory does not grow with them."""
    async with (
        Emulator(fixed_latency=0.01, limits=ROOMY, api_key=API_KEY) as emu,
        serve(kind, tmp_path, emu) as base,
        aiohttp.ClientSession() as http,
    ):

        async def one(i: int) -> None:
            body = {"kind": "image", "prompt": f"a cat number {i}", "key": f"cat-{i}"}
            async with http.post(f"{base}/generate", json=body) as response:
                assert response.status == 202
            while True:
                async with http.get(f"{base}/jobs/cat-{i}") as response:
                    state = (await response.json())["state"]
                if state in ("completed", "failed"):
                    assert state == "completed"
                    return
                await anyio.sleep(0.02)

        async def round_of(start: int, count: int) -> None:
            for batch in range(start, start + count, 25):
                async with anyio.create_task_group() as tg:
                    for i in range(batch, min(batch + 25, start + count)):
                        tg.start_soon(one, i)

        with anyio.fail_after(120):
            await round_of(0, 150)  # warm-up: caches, pools, the journal's pages
            before = _rss()
            await round_of(150, 300)
            after = _rss()
    assert emu.inspect.creates_total == 450
    # Released jobs leave memory; what stays is allocator slack, not per-request state.
    assert after - before < 12 * 1024 * 1024, (before, after)
