"""Fault injection: 5xx and 429 per route, dropped creates, cut and slow downloads, slow creates."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import lumaai
import pytest
import pytest_asyncio

from lumasched.emulator import Emulator, Faults
from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import decode_video, fetch, wait_terminal


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _client(emu: Emulator, **kwargs) -> lumaai.AsyncLumaAI:
    return lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url, **kwargs)


async def test_server_errors_on_one_route_create_nothing():
    """A 5xx fault on create answers before anything is made; other routes are untouched."""
    faults = Faults(server_errors={"create": 1.0}, server_error_status=503)
    async with (
        Emulator(fast_emulator_config(faults=faults)) as emu,
        _client(emu, max_retries=0) as client,
    ):
        with pytest.raises(lumaai.InternalServerError) as info:
            await client.generations.create(model="ray-2", prompt="a cat")
        assert info.value.status_code == 503
        assert (await client.ping.check()).message == "pong"
        assert emu.inspect.creates_total == 0
        assert emu.inspect.faults_injected == {"server_error": 1}


async def test_injected_429_and_rates_are_seeded():
    """A 429 fault answers Retry-After; with a seed, a rate of 0.5 fires reproducibly."""

    async def outcomes(seed: int) -> list[int]:
        config = fast_emulator_config(seed=seed, faults=Faults(rate_limits={"ping": 0.5}))
        async with Emulator(config) as emu, _client(emu, max_retries=0) as client:
            seen = []
            for _ in range(20):
                try:
                    await client.ping.check()
                    seen.append(200)
                except lumaai.RateLimitError as exc:
                    assert exc.response.headers["retry-after"]
                    seen.append(429)
            return seen

    first, second = await outcomes(3), await outcomes(3)
    assert first == second
    assert 0 < first.count(429) < 20


async def test_dropped_create_still_makes_and_bills_a_generation():
    """A connection dropped after the create leaves a billed generation the client never saw."""
    async with (
        Emulator(fast_emulator_config(faults=Faults(drop_after_create=1.0))) as emu,
        _client(emu, max_retries=0) as client,
    ):
        start = (await client.credits.get()).credit_balance
        with pytest.raises(lumaai.APIConnectionError):
            await client.generations.image.create(model="photon-1", prompt="a cat")
        page = await client.generations.list()
        assert page.count == 1 and page.generations[0].request.prompt == "a cat"
        assert (await client.credits.get()).credit_balance < start


async def test_sdk_retries_after_a_drop_make_duplicates():
    """The SDK's blind POST retries after dropped creates show up in the duplicates detector."""
    async with (
        Emulator(fast_emulator_config(faults=Faults(drop_after_create=1.0))) as emu,
        _client(emu, max_retries=2) as client,
    ):
        with pytest.raises(lumaai.APIConnectionError):
            await client.generations.image.create(model="photon-1", prompt="a cat")
        assert emu.inspect.creates_total == 3
        assert emu.inspect.duplicate_creates == 2


async def test_slow_create_response_times_out_after_the_create():
    """create_response_delay makes a client time out although the generation exists."""
    async with (
        Emulator(fast_emulator_config(faults=Faults(create_response_delay=0.5))) as emu,
        _client(emu, max_retries=0, timeout=0.1) as client,
    ):
        with pytest.raises(lumaai.APITimeoutError):
            await client.generations.image.create(model="photon-1", prompt="a cat")
        emu.set_faults()
        assert (await client.generations.list()).count == 1


async def test_cut_download_then_resume_with_range(http):
    """A cut download fails mid-body; resuming with Range yields the identical whole file."""
    async with Emulator(fast_emulator_config()) as emu, _client(emu) as client:
        generation = await client.generations.create(model="ray-2", prompt="a cat")
        url = (await wait_terminal(client, generation.id)).assets.video
        whole = (await fetch(http, url))[2]
        emu.set_faults(cut_downloads=1.0)
        received = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(url) as response:
                assert int(response.headers["Content-Length"]) == len(whole)
                async for chunk in response.content.iter_any():
                    received.extend(chunk)
        assert 0 < len(received) < len(whole)
        emu.set_faults()
        status, _, rest = await fetch(http, url, Range=f"bytes={len(received)}-")
        assert status == 206
        assert bytes(received) + rest == whole
        assert decode_video(whole)[0] >= 1
        assert emu.inspect.downloads_cut == 1


async def test_slow_downloads_are_throttled(http):
    """download_bytes_per_second throttles the body."""
    async with Emulator(fast_emulator_config()) as emu, _client(emu) as client:
        generation = await client.generations.create(model="ray-2", prompt="a cat")
        url = (await wait_terminal(client, generation.id)).assets.video
        size = len((await fetch(http, url))[2])
        emu.set_faults(download_bytes_per_second=size / 0.3)
        started = time.monotonic()
        assert len((await fetch(http, url))[2]) == size
        assert time.monotonic() - started >= 0.25


def test_faults_validate_their_inputs():
    """Unknown routes, rates outside [0, 1] and unknown fields are refused."""
    with pytest.raises(ValueError):
        Faults(server_errors={"nope": 0.5})
    with pytest.raises(ValueError):
        Faults(rate_limits=1.5)
    with pytest.raises(ValueError):
        Faults(cut_downloads=-0.1)
    with pytest.raises(ValueError):
        Faults.from_mapping({"explode": 1})
