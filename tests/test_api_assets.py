"""open_asset: a streamed GET of an asset URL, on a real local socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from lumasched.api import LumaClient, RetryPolicy
from lumasched.api._assets import parse_content_range
from lumasched.errors import NotFoundError, TransportError
from tests._api_fixtures import API_KEY

DATA = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
async def cdn() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A tiny asset host with Range support; it records each request's headers."""
    seen: list[dict[str, str]] = []

    async def asset(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if request.match_info["name"] == "missing.mp4":
            return web.json_response({"detail": "expired"}, status=404)
        if request.match_info["name"] == "short.mp4":
            response = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
            await response.prepare(request)
            await response.write(DATA[:100])
            request.transport.close()  # type: ignore[union-attr]
            return response
        start = int(request.http_range.start or 0)
        if start >= len(DATA):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(DATA)}"})
        status = 206 if start else 200
        headers = {"ETag": '"v1"'}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
        return web.Response(
            body=DATA[start:], status=status, headers=headers, content_type="video/mp4"
        )

    app = web.Application()
    app.router.add_get("/assets/{name}", asset)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/assets", seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[LumaClient]:
    async with LumaClient(API_KEY, "http://127.0.0.1:9/v1", retry=RetryPolicy.never()) as c:
        yield c


async def test_whole_asset_without_credentials(
    client: LumaClient, cdn: tuple[str, list[dict[str, str]]]
) -> None:
    """A full GET streams every byte, sizes known, and sends no Authorization."""
    base, seen = cdn
    async with client.open_asset(f"{base}/v.mp4") as stream:
        assert (stream.status, stream.content_length, stream.total_size) == (200, 10240, 10240)
        assert (stream.etag, stream.content_type) == ('"v1"', "video/mp4")
        chunks = [c async for c in stream.iter_chunks(4096)]
    assert b"".join(chunks) == DATA and max(map(len, chunks)) <= 4096
    assert "Authorization" not in seen[0] and "Range" not in seen[0]
    assert API_KEY not in str(seen)
    assert client.stats.download_bytes == len(DATA) and client.stats.assets_opened == 1


async def test_resume_from_an_offset(
    client: LumaClient, cdn: tuple[str, list[dict[str, str]]]
) -> None:
    """start>0 sends Range: bytes=start-; a 206 reports this part's and the total size."""
    base, seen = cdn
    async with client.open_asset(f"{base}/v.mp4", start=10000) as stream:
        assert (stream.status, stream.content_length, stream.total_size) == (206, 240, 10240)
        assert await stream.read() == DATA[10000:]
    assert seen[0]["Range"] == "bytes=10000-"


async def test_range_past_the_end(
    client: LumaClient, cdn: tuple[str, list[dict[str, str]]]
) -> None:
    """A 416 still reports the total size, so a finished download can be recognised."""
    base, _ = cdn
    async with client.open_asset(f"{base}/v.mp4", start=len(DATA)) as stream:
        assert (stream.status, stream.total_size) == (416, len(DATA))


async def test_error_status_is_exposed_and_raisable(
    client: LumaClient, cdn: tuple[str, list[dict[str, str]]]
) -> None:
    """An error status does not raise by itself; raise_for_status gives the SDK class."""
    base, _ = cdn
    async with client.open_asset(f"{base}/missing.mp4") as stream:
        assert stream.status == 404
        with pytest.raises(NotFoundError, match="expired"):
            await stream.raise_for_status()


async def test_truncated_body_is_a_transport_error(
    client: LumaClient, cdn: tuple[str, list[dict[str, str]]]
) -> None:
    """A body cut short of its Content-Length raises TransportError while reading."""
    base, _ = cdn
    async with client.open_asset(f"{base}/short.mp4") as stream:
        with pytest.raises(TransportError):
            await stream.read()


async def test_bad_arguments(client: LumaClient) -> None:
    """Only http(s) URLs and non-negative offsets."""
    with pytest.raises(ValueError):
        async with client.open_asset("file:///etc/passwd"):
            pass
    with pytest.raises(ValueError):
        async with client.open_asset("http://x/y", start=-1):
            pass


def test_parse_content_range() -> None:
    """bytes first-last/total, with '*' for an unknown total."""
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range("bytes 5-9/*") == (5, 9, None)
    assert parse_content_range("items 1-2/3") is None
