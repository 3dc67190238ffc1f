"""Configurable behaviours: same-id derived generations, env fixture, sync timeout, lifecycle."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

import os

import lumaai
import pytest

from lumasched.emulator import Emulator
from lumasched.testing import fast_emulator_config, luma_env  # noqa: F401 (fixture)
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    check_assets,
    http,
    luma_emulator,
    luma_emulator_config,
    wait_terminal,
)


async def test_same_id_mode_restarts_the_source(http):
    """With derived_new_id=False, upscale keeps the id, runs again, and serves new files."""
    async with Emulator(fast_emulator_config(derived_new_id=False, fixed_latency=0.05)) as emu:
        async with lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client:
            source = await client.generations.create(model="ray-2", prompt="a cat")
            before = await check_assets(http, await wait_terminal(client, source.id))
            upscaled = await client.generations.upscale(source.id, resolution="1080p")
            assert upscaled.id == source.id
            assert upscaled.state in ("queued", "dreaming")  # queued lasts 10 ms
            after = await check_assets(http, await wait_terminal(client, source.id))
            assert after["video"] != before["video"]
            assert (await client.generations.list()).count == 1
        assert emu.inspect.creates_by_kind == {"video": 1, "upscale": 1}


async def test_luma_env_points_the_sdk_at_the_emulator(luma_env):
    """luma_env sets LUMAAI_BASE_URL and LUMAAI_API_KEY so a default SDK client reaches it."""
    assert os.environ["LUMAAI_BASE_URL"] == luma_env.base_url
    async with lumaai.AsyncLumaAI() as client:
        assert (await client.ping.check()).message == "pong"


async def test_sync_image_gives_up_at_sync_timeout():
    """A sync create returns when sync_timeout runs out, still unfinished."""
    async with (
        Emulator(fixed_latency=2.0) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        generation = await client.generations.image.create(
            model="photon-1", prompt="slow cat", sync=True, sync_timeout=0.1
        )
        assert generation.state in ("queued", "dreaming")


async def test_emulator_starts_once_and_closes_twice():
    """An emulator refuses a second start; close is idempotent; repr never shows the key."""
    emu = Emulator(api_key="lm-very-secret")
    async with emu:
        assert "lm-very-secret" not in repr(emu) + repr(emu.config)
        with pytest.raises(RuntimeError):
            await emu.start()
    await emu.close()
    with pytest.raises(RuntimeError):
        await emu.start()


async def test_port_in_use_is_an_error():
    """Binding a port another emulator holds raises OSError and leaks nothing."""
    async with Emulator() as first:
        with pytest.raises(OSError):
            async with Emulator(port=first.port):
                pass
