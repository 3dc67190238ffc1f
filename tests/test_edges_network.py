"""Every network read is bounded: API answers, request time, redirects, assets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lumasched import (
    APITimeoutError,
    AssetTooLargeError,
    Downloader,
    DownloadError,
    LumaClient,
    ResponseTooLargeError,
    RetryPolicy,
    TransportError,
    VideoRequest,
)
from lumasched._config import Settings
from tests import _broken_server
from tests._broken_server import ASSET, BrokenAPI

api = _broken_server.api

CAP = 64 * 1024


@pytest_asyncio.fixture
async def client(api: BrokenAPI) -> AsyncIterator[LumaClient]:
    settings = Settings(
        api_key="k", base_url=api.base_url, max_response_bytes=CAP, request_deadline=0.5
    )
    async with LumaClient(settings=settings, retry=RetryPolicy.for_tests(attempts=1)) as c:
        yield c


async def _create(client: LumaClient, mode: str) -> str:
    generation = await client.create(VideoRequest(f"a shot mode:{mode}", model="ray-flash-2"))
    return generation.id


async def test_an_endless_answer_is_cut_at_the_cap(api: BrokenAPI, client: LumaClient) -> None:
    """A status read answering an endless non-JSON body stops at the cap with a clear error."""
    gid = await _create(client, "huge-body")
    with pytest.raises(ResponseTooLargeError, match=f"larger than {CAP} bytes"):
        await client.get(gid)
    assert api.sent < 64 * 1024 * 1024, "the client hung up soon after the cap"


async def test_a_declared_huge_answer_is_refused_unread(api: BrokenAPI, client: LumaClient) -> None:
    """A Content-Length past the cap is refused before the body is read."""
    gid = await _create(client, "huge-declared")
    with pytest.raises(ResponseTooLargeError):
        await client.get(gid)


async def test_a_trickling_answer_meets_the_request_deadline(client: LumaClient) -> None:
    """One byte every 50 ms never trips the read timeout; the total deadline ends it."""
    gid = await _create(client, "trickle")
    with pytest.raises(APITimeoutError):
        await client.get(gid)


async def test_an_api_redirect_is_a_readable_error(client: LumaClient) -> None:
    """The API answering a redirect (a wrong base URL) says so instead of failing to parse."""
    gid = await _create(client, "redirect")
    with pytest.raises(TransportError, match=r"redirect \(HTTP 302 to http://.*check the base URL"):
        await client.get(gid)


async def _asset_url(api: BrokenAPI, mode: str) -> str:
    return f"{api.base_url}/asset/{mode}/gen-x.mp4"


async def test_an_asset_redirect_loop_fails_the_download(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """An asset URL that redirects to itself ends in a DownloadError naming the loop."""
    downloader = Downloader(client, attempts=2, backoff=0.0)
    with pytest.raises(DownloadError, match="redirect loop"):
        await downloader.download(await _asset_url(api, "redirect-asset"), tmp_path / "a.mp4")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("huge-asset", "is 1000000000000 bytes, more than the 1000000-byte cap"),
        ("endless-asset", "goes on, more than the 1000000-byte cap"),
    ],
)
async def test_an_asset_past_max_size_is_refused_and_removed(
    api: BrokenAPI, client: LumaClient, tmp_path: Path, mode: str, message: str
) -> None:
    """A declared length over max_size fails before reading; a body with no length that
    never ends is cut at max_size; either way no file or part file is left."""
    target = tmp_path / "big.mp4"
    downloader = Downloader(client, max_size=1_000_000)
    with pytest.raises(AssetTooLargeError, match=message):
        await downloader.download(await _asset_url(api, mode), target)
    assert list(tmp_path.iterdir()) == []
    assert downloader.stats().bytes <= (0 if mode == "huge-asset" else 1_000_000)


async def test_an_asset_within_max_size_downloads(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """The cap leaves ordinary assets alone (and an exact fit is allowed)."""
    target = tmp_path / "ok.mp4"
    result = await Downloader(client, max_size=len(ASSET)).download(
        await _asset_url(api, "ok"), target
    )
    assert result.bytes == len(ASSET) and target.read_bytes() == ASSET


def test_a_server_message_is_cut_to_a_line() -> None:
    """A 400 whose detail is 100,000 characters makes an error (and journal reason) of 500."""
    from lumasched.api._transport import error_for_status

    raw = json.dumps({"detail": "no " * 100_000}).encode()
    error = error_for_status(400, {}, raw, method="POST", url="/generations")
    assert error.detail is not None and len(error.detail) == 501
    assert len(str(error)) < 600


def test_the_total_deadline_leaves_room_for_the_read_timeout() -> None:
    """90 s in all by default; a read timeout given as a number raises the total with it."""
    assert LumaClient(api_key="k", base_url="http://x").timeout.total == 90.0
    assert LumaClient(api_key="k", base_url="http://x", timeout=120).timeout.total == 125.0
