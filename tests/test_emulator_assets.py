"""Asset serving: real files, Content-Length, HTTP Range, big padded videos, expiring URLs."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import aiohttp
import lumaai
import pytest
import pytest_asyncio

from lumasched.emulator import Emulator
from lumasched.emulator._assets import VideoFile, parse_range
from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    API_KEY,
    check_assets,
    decode_video,
    fetch,
    luma_emulator,
    luma_emulator_config,
    sdk,
    wait_terminal,
)

MB = 1024 * 1024


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _completed_video(emu: Emulator, **body) -> str:
    async with lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client:
        generation = await client.generations.create(model="ray-2", prompt="a cat", **body)
        done = await wait_terminal(client, generation.id)
        return done.assets.video


async def test_range_requests(http):
    """Range answers 206 with Content-Range; suffix ranges work; past the end is 416."""
    async with Emulator(fast_emulator_config()) as emu:
        url = await _completed_video(emu)
        status, headers, whole = await fetch(http, url)
        assert status == 200 and headers["Accept-Ranges"] == "bytes"
        size = len(whole)
        status, headers, part = await fetch(http, url, Range="bytes=100-199")
        assert (status, part) == (206, whole[100:200])
        assert headers["Content-Range"] == f"bytes 100-199/{size}"
        assert headers["Content-Length"] == "100"
        status, headers, tail = await fetch(http, url, Range="bytes=-10")
        assert (status, tail) == (206, whole[-10:])
        status, headers, rest = await fetch(http, url, Range=f"bytes={size - 5}-")
        assert (status, rest) == (206, whole[-5:])
        status, headers, _ = await fetch(http, url, Range=f"bytes={size}-")
        assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
        async with http.head(url) as response:
            assert int(response.headers["Content-Length"]) == size
        assert emu.inspect.downloads_completed == 4
        assert emu.inspect.download_bytes == size + 100 + 10 + 5


async def test_padded_video_is_large_valid_and_streamed(http):
    """video_padding_bytes makes big files (a free box) that still decode; 150 MB by range."""
    async with Emulator(fast_emulator_config(video_padding_bytes=3 * MB)) as emu:
        status, _, data = await fetch(http, await _completed_video(emu))
        assert status == 200 and len(data) > 3 * MB
        assert decode_video(data)[0] >= 1
    async with Emulator(fast_emulator_config(video_padding_bytes=150 * MB)) as emu:
        url = await _completed_video(emu)
        async with http.head(url) as response:
            size = int(response.headers["Content-Length"])
        assert size > 150 * MB
        status, _, tail = await fetch(http, url, Range="bytes=-16")
        assert (status, tail) == (206, bytes(16))


def test_video_file_free_box_layout():
    """The free box header states its own size; a >4 GiB padding switches to a 64-bit size."""
    small = VideoFile(b"CLIP", b"marker", 10)
    head = b"".join(small.iter_range(0, small.size))
    assert head[4:8] == struct.pack(">I", 8 + 6 + 10) and head[8:12] == b"free"
    assert small.size == len(head)
    huge = VideoFile(b"CLIP", b"m", 5 * 1024**3)
    header = b"".join(huge.iter_range(4, 20))
    assert header[:8] == struct.pack(">I4s", 1, b"free")
    assert struct.unpack(">Q", header[8:16])[0] == huge.size - 4


def test_parse_range_edge_cases():
    """Single byte ranges parse; malformed or multi-range headers are ignored; bad ones are None."""
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range("bytes=5-100", 10) == (5, 10)
    assert parse_range("bytes=-0", 10) is None
    assert parse_range("bytes=10-", 10) is None
    for header in ("items=0-1", "bytes=0-1,3-4", "bytes=abc", "bytes=5-2"):
        with pytest.raises(ValueError):
            parse_range(header, 10)


async def test_asset_urls_expire_and_a_fresh_get_renews_them(http):
    """With asset_url_ttl, an old URL answers 403; re-getting the generation gives a working one."""
    async with Emulator(fast_emulator_config(asset_url_ttl=0.2)) as emu:
        async with lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client:
            generation = await client.generations.image.create(model="photon-1", prompt="a cat")
            done = await wait_terminal(client, generation.id)
            deadline = time.monotonic() + 10
            while (answer := await fetch(http, done.assets.image))[0] == 200:
                assert time.monotonic() < deadline, "the URL never expired"
                await asyncio.sleep(0.02)
            status, _, body = answer
            assert status == 403 and b"expired" in body
            fresh = await client.generations.get(generation.id)
            assert fresh.assets.image != done.assets.image
            assert (await fetch(http, fresh.assets.image))[0] == 200
        assert emu.inspect.expired_url_hits == 1


async def test_expire_asset_urls_and_bad_signatures(http):
    """expire_asset_urls() kills URLs handed out so far; tampered URLs and deleted ones fail."""
    async with (
        Emulator(fast_emulator_config()) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        generation = await client.generations.create(model="ray-2", prompt="a cat")
        old = (await wait_terminal(client, generation.id)).assets.video
        emu.expire_asset_urls()
        assert (await fetch(http, old))[0] == 403
        new = (await client.generations.get(generation.id)).assets.video
        assert (await fetch(http, new))[0] == 200
        assert (await fetch(http, new.replace("sig=", "sig=0")))[0] == 403
        await client.generations.delete(generation.id)
        assert (await fetch(http, new))[0] == 404


async def test_asset_urls_are_stable_per_generation(sdk, luma_emulator, http):  # noqa: F811
    """get, list and repeated gets hand out the same URLs, and they keep working."""
    created = await sdk.generations.create(model="ray-flash-2", prompt="a calm lake")
    done = await wait_terminal(sdk, created.id)
    again = await sdk.generations.get(created.id)
    listed = (await sdk.generations.list()).generations[0]
    assert done.assets.video == again.assets.video == listed.assets.video
    assert done.assets.image == again.assets.image == listed.assets.image
    await check_assets(http, again)


async def test_asset_url_ttl_expires_and_a_fresh_get_renews():
    """With a TTL a URL stays the same for half its life, answers 403 once expired,
    and a GET then hands out a new URL that works."""
    async with (
        Emulator(fast_emulator_config(asset_url_ttl=0.3, api_key=API_KEY)) as emu,
        lumaai.AsyncLumaAI(auth_token=API_KEY, base_url=emu.base_url, max_retries=0) as client,
        aiohttp.ClientSession() as http,
    ):
        created = await client.generations.image.create(model="photon-1", prompt="a cat")
        first = (await wait_terminal(client, created.id)).assets.image
        soon = (await client.generations.get(created.id)).assets.image
        deadline = time.monotonic() + 5
        while soon == first and time.monotonic() < deadline:  # same until half the TTL
            await asyncio.sleep(0.02)
            soon = (await client.generations.get(created.id)).assets.image
        assert soon != first
        while (await fetch(http, first))[0] != 403:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        fresh = (await client.generations.get(created.id)).assets.image
        assert (await fetch(http, fresh))[0] == 200
        assert emu.inspect.expired_url_hits >= 1
