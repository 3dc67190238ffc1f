"""The live dashboard of a library Scheduler: served on 127.0.0.1, its numbers
follow the run over server-sent events, and it serves only the run's files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from PIL import Image

from lumasched.api import ImageRequest, VideoRequest
from lumasched.gallery import Dashboard
from tests._engine_fixtures import engine


async def _next_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    while True:
        line = await response.content.readline()
        assert line, "the event stream ended"
        if line.startswith(b"data: "):
            data: dict[str, Any] = json.loads(line[len(b"data: ") :])
            return data


async def test_dashboard_follows_a_run(tmp_path: Path) -> None:
    """The event stream's done counts, slots, latency and newest results (with inline
    thumbnails) move as jobs finish; the page itself is served at the url."""
    async with (
        engine(out_dir=tmp_path, latency=0.3) as (_, _, scheduler),
        Dashboard(scheduler, interval=0.05) as dashboard,
        aiohttp.ClientSession() as http,
    ):
        assert dashboard.url.startswith("http://127.0.0.1:")
        async with http.get(dashboard.url) as page:
            assert page.status == 200 and "EventSource" in await page.text()
        async with http.get(dashboard.url + "events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await _next_event(stream)
            assert first["families"]["image"]["done"] == 0
            jobs = [scheduler.submit(ImageRequest(f"a cat {n}"), key=f"cat-{n}") for n in range(4)]
            jobs.append(scheduler.submit(VideoRequest("a dog"), key="dog"))
            busy = done = first
            with anyio.fail_after(30):
                while busy["families"]["image"]["held"] == 0 and done is first:
                    busy = await _next_event(stream)
                for job in jobs:
                    await job
                while done["remaining"] or len(done["newest"]) < 5:
                    done = await _next_event(stream)
        assert done["creates"] == 5 and done["remaining"] == 0
        assert done["families"]["image"]["latency"]["count"] == 4
        assert {n["id"] for n in done["newest"]} == {"cat-0", "cat-1", "cat-2", "cat-3", "dog"}
        assert done["history"], "samples for the charts"
        newest = {n["id"]: n for n in done["newest"]}
        image = base64.b64decode(newest["cat-0"]["thumb"].removeprefix("data:image/jpeg;base64,"))
        with Image.open(io.BytesIO(image)) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 240
        assert newest["dog"]["thumb"].startswith("data:image/jpeg;base64,"), "a video's poster"


async def test_dashboard_serves_no_file(tmp_path: Path) -> None:
    """The page gets results inline: no path of the machine is served."""
    (tmp_path / "secret.jpg").write_bytes(b"x")
    async with (
        engine(out_dir=tmp_path) as (_, _, scheduler),
        Dashboard(scheduler) as dashboard,
        aiohttp.ClientSession() as http,
    ):
        for path in ("files/secret.jpg", "secret.jpg", "..%2Fsecret.jpg"):
            async with http.get(dashboard.url + path) as response:
                assert response.status == 404


async def test_dashboard_closes_with_a_client_still_listening(tmp_path: Path) -> None:
    """Leaving the block ends open event streams at once and frees the port."""
    async with engine() as (_, _, scheduler), aiohttp.ClientSession() as http:
        async with Dashboard(scheduler) as dashboard:
            stream = await http.get(dashboard.url + "events")
            await _next_event(stream)
            url = dashboard.url
        with anyio.fail_after(5):
            rest = await stream.content.read()  # returns only once the server ended the stream
        assert stream.content.at_eof()
        last = json.loads(rest.decode().strip().split("data: ")[-1])
        assert last["finished"] is True, "the last event says the run is over"
        stream.release()
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url)


async def test_dashboard_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A taken port names the address in the error."""
    async with engine() as (_, _, scheduler), Dashboard(scheduler) as first:
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            async with Dashboard(scheduler, port=port):
                pass
