"""Shared fixtures and helpers for the emulator tests (official ``lumaai`` SDK as client)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import lumaai
import pytest
import pytest_asyncio
from lumaai import AsyncLumaAI
from PIL import Image

from lumasched.emulator import Emulator, EmulatorConfig
from lumasched.testing import fast_emulator_config, luma_emulator  # noqa: F401

API_KEY = "lm-emulator-test"


@pytest.fixture
def luma_emulator_config() -> EmulatorConfig:
    return fast_emulator_config(api_key=API_KEY)


@pytest_asyncio.fixture
async def sdk(luma_emulator: Emulator) -> AsyncIterator[AsyncLumaAI]:  # noqa: F811
    """The official async SDK pointed at the emulator, without its own retries,
    validating every response against its types (strict mode)."""
    async with AsyncLumaAI(
        auth_token=API_KEY,
        base_url=luma_emulator.base_url,
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        yield client


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_terminal(sdk: AsyncLumaAI, gen_id: str, timeout: float = 5.0) -> Any:
    """Poll until the generation is completed or failed."""
    deadline = time.monotonic() + timeout
    while True:
        generation = await sdk.generations.get(gen_id)
        if generation.state in ("completed", "failed"):
            return generation
        if time.monotonic() > deadline:
            raise AssertionError(f"{gen_id} still {generation.state} after {timeout} s")
        await asyncio.sleep(0.01)


async def expect_create(
    sdk: AsyncLumaAI, emu: Emulator, path: str, body: dict[str, Any], detail: str | None
) -> None:
    """POST a create body: it is created when ``detail`` is None, else refused
    with 400 and exactly that ``detail`` (and nothing created)."""
    before = emu.inspect.creates_total
    call = sdk.post(path, body=body, cast_to=object)
    if detail is None:
        await call
        assert emu.inspect.creates_total == before + 1
        return
    with pytest.raises(lumaai.BadRequestError) as info:
        await call
    assert isinstance(info.value.body, dict)
    assert info.value.body["detail"] == detail
    assert emu.inspect.creates_total == before


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any, bytes]:
    async with http.get(url, headers=headers) as response:
        return response.status, response.headers, await response.read()


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_video(data: bytes) -> tuple[int, int, int]:
    """(frames decoded, width, height) of an MP4; raises if it is not a real video."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height


async def check_assets(http: aiohttp.ClientSession, generation: Any) -> dict[str, bytes]:
    """Download every asset of a completed generation and check each really opens."""
    assert generation.state == "completed", generation
    files: dict[str, bytes] = {}
    assets = generation.assets
    if assets.video:
        status, headers, data = await fetch(http, assets.video)
        assert status == 200
        assert int(headers["Content-Length"]) == len(data)
        frames, width, height = decode_video(data)
        assert frames >= 1 and width > 0 and height > 0
        files["video"] = data
    assert assets.image
    status, headers, data = await fetch(http, assets.image)
    assert status == 200
    image = open_image(data)
    assert image.width > 0 and image.height > 0
    files["image"] = data
    return files
