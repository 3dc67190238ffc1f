"""LumaClient against the built-in emulator on a real socket: every endpoint end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lumasched.api import (
    AudioRequest,
    Generation,
    GenerationKeyframe,
    ImageRequest,
    Keyframes,
    LumaClient,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    RetryPolicy,
    UpscaleRequest,
    VideoRequest,
)
from lumasched.emulator import Emulator, Faults
from lumasched.errors import AmbiguousCreateError, AuthenticationError, NotFoundError

KEY = "lm-emulator-key"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(api_key=KEY, fixed_latency=0.05, seed=1) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[LumaClient]:
    async with LumaClient(KEY, emu.base_url, retry=RetryPolicy.for_tests()) as c:
        yield c


async def _finish(client: LumaClient, generation: Generation) -> Generation:
    for _ in range(200):
        if generation.is_terminal:
            return generation
        await asyncio.sleep(0.02)
        generation = await client.get(generation.id)
    raise AssertionError(f"{generation.id} never finished")


async def test_every_kind_completes_and_downloads(client: LumaClient) -> None:
    """Each request kind is accepted, completes, and its asset streams in full."""
    video = await _finish(client, await client.create(VideoRequest("a teddy bear")))
    assert video.state == "completed" and video.asset_url
    requests = [
        ImageRequest("a cat"),
        VideoRequest("continue", keyframes=Keyframes(GenerationKeyframe(video.id))),
        ReframeImageRequest("https://example.invalid/i.jpg", aspect_ratio="9:16"),
        ReframeVideoRequest("https://example.invalid/v.mp4", aspect_ratio="1:1"),
        ModifyVideoRequest("https://example.invalid/v.mp4", mode="flex_1"),
        UpscaleRequest(video.id, resolution="1080p"),
        AudioRequest(video.id, prompt="rain"),
    ]
    created = await asyncio.gather(*(client.create(r) for r in requests))
    finished = await asyncio.gather(*(_finish(client, g) for g in created))
    assert [g.state for g in finished] == ["completed"] * len(requests)
    for generation in (video, finished[0]):
        assert generation.asset_url is not None
        async with client.open_asset(generation.asset_url) as stream:
            body = await stream.read()
        assert stream.status == 200 and len(body) == stream.total_size > 0
    assert dict(client.stats.creates) == {
        "video": 2,
        "image": 1,
        "reframe_image": 1,
        "reframe_video": 1,
        "modify_video": 1,
        "upscale": 1,
        "audio": 1,
    }


async def test_reads_and_delete(client: LumaClient) -> None:
    """list pages, iter_generations, concepts, camera motions, credits, ping, delete."""
    ids = {(await client.create(ImageRequest(f"cat {i}"))).id for i in range(3)}
    listed = {g.id async for g in client.iter_generations(page_size=2)}
    assert ids <= listed
    assert await client.concepts()
    assert await client.camera_motions()
    assert (await client.credits()).credit_balance >= 0
    assert (await client.ping()).message == "pong"
    victim = ids.pop()
    await client.delete(victim)
    with pytest.raises(NotFoundError):
        await client.get(victim)


async def test_wrong_key_is_authentication_error(emu: Emulator) -> None:
    """The emulator's 401 maps to AuthenticationError, without echoing the key."""
    async with LumaClient("lm-wrong", emu.base_url, retry=RetryPolicy.never()) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.ping()
    assert "lm-wrong" not in str(info.value)


async def test_dropped_create_is_ambiguous_and_sent_once(emu: Emulator, client: LumaClient) -> None:
    """The emulator accepts a create then drops the connection: one POST, ambiguous."""
    emu.set_faults(Faults(drop_after_create=1.0))
    with pytest.raises(AmbiguousCreateError):
        await client.create(VideoRequest("a teddy bear"))
    assert client.stats.creates == {"video": 1}
    emu.set_faults(Faults())
    page = await client.list()
    assert [g.request and g.request.get("prompt") for g in page.generations] == ["a teddy bear"]
