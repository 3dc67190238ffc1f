"""The emulator's state file: generations, slots, credits and asset URLs outlive a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lumaai import AsyncLumaAI, NotFoundError, RateLimitError

from lumasched.emulator import Emulator, EmulatorConfig
from lumasched.errors import ConfigurationError
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.testing import fast_emulator_config
from tests._waiting import wait_until

API_KEY = "lm-state-test-secret-key"


def config(state: Path, **overrides: Any) -> EmulatorConfig:
    return fast_emulator_config(api_key=API_KEY, state_path=state, **overrides)


def sdk(emu: Emulator) -> AsyncLumaAI:
    return AsyncLumaAI(auth_token=API_KEY, base_url=emu.base_url, max_retries=0)


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.read()


def done_at(emu: Emulator, gen_id: str) -> float:
    """When the generation ends, on ``time.monotonic`` (it goes on while the emulator is down)."""
    record = emu.store.get(gen_id)
    assert record is not None
    return record.timeline.done_at


async def until_past(moment: float) -> None:
    """A wait derived from the emulator's own timeline, not a guessed sleep."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()) + 0.01)


async def test_generations_and_asset_urls_survive_a_restart(tmp_path: Path) -> None:
    """After a restart on the same file: same generations, request echoes, order,
    deletions and credits, and asset URLs handed out before still serve the same bytes."""
    state = tmp_path / "emu.sqlite"
    async with Emulator(config(state, fixed_latency=0.05)) as emu, sdk(emu) as client:
        first = await client.generations.image.create(prompt="a red fox", model="photon-1")
        video = await client.generations.video.create(
            prompt="waves at dusk", model="ray-flash-2", resolution="540p", duration="5s"
        )
        gone = await client.generations.image.create(prompt="a blue jay", model="photon-1")
        await client.generations.delete(gone.id)
        await wait_until(lambda: emu.generation_json(video.id)["state"] == "completed", "done")  # type: ignore[index]
        done = await client.generations.get(video.id)
        listed = [g.id for g in (await client.generations.list()).generations]
        balance = (await client.credits.get()).credit_balance
        echo = emu.generation_json(first.id)
        port = emu.port
    assert done.assets and done.assets.video and echo is not None

    async with Emulator(config(state, fixed_latency=0.05)) as emu, sdk(emu) as client:
        assert emu.port == port
        again = await client.generations.get(first.id)
        assert again.state == "completed"
        assert again.created_at == first.created_at
        assert emu.generation_json(first.id)["request"] == echo["request"]  # type: ignore[index]
        with pytest.raises(NotFoundError):
            await client.generations.get(gone.id)
        assert [g.id for g in (await client.generations.list()).generations] == listed
        assert (await client.credits.get()).credit_balance == balance
        status, video_bytes = await fetch(done.assets.video)
        assert status == 200
        fresh = await client.generations.get(video.id)
        assert fresh.assets and fresh.assets.video
        assert (await fetch(fresh.assets.video))[1] == video_bytes
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert API_KEY.encode() not in data


async def test_jobs_go_on_along_their_timelines_while_the_emulator_is_down(
    tmp_path: Path,
) -> None:
    """A job due while the emulator was down is completed on restart; one not yet
    due is still running, keeps its slot, and completes on time."""
    state = tmp_path / "emu.sqlite"
    limits = Limits(image=FamilyLimits(concurrency=2, requests=100, per_seconds=60))
    async with Emulator(config(state, limits=limits, fixed_latency=0.1)) as emu, sdk(emu) as c:
        short = await c.generations.image.create(prompt="a short job", model="photon-1")
        due = done_at(emu, short.id)
    async with Emulator(config(state, limits=limits, fixed_latency=3.0)) as emu, sdk(emu) as c:
        long = await c.generations.image.create(prompt="a long job", model="photon-1")
    await until_past(due)

    async with Emulator(config(state, limits=limits, fixed_latency=3.0)) as emu, sdk(emu) as c:
        assert (await c.generations.get(short.id)).state == "completed"
        assert (await c.generations.get(long.id)).state in ("queued", "dreaming")
        assert emu.inspect.families[Family.IMAGE].in_flight == 1
        await c.generations.image.create(prompt="fills the second slot", model="photon-1")
        with pytest.raises(RateLimitError, match="Too many concurrent"):
            await c.generations.image.create(prompt="one too many", model="photon-1")


async def test_charges_and_refunds_survive_a_restart(tmp_path: Path) -> None:
    """A job that fails while the emulator is down is refunded on restart."""
    state = tmp_path / "emu.sqlite"
    # 1 s: it still runs when this emulator stops, even on a busy machine
    async with Emulator(config(state, fixed_latency=1.0)) as emu, sdk(emu) as client:
        start = emu.config.credit_balance_cents
        doomed = await client.generations.image.create(prompt="an nsfw poster", model="photon-1")
        assert emu.store.balance_cents < start  # charged (read without settling the refund)
        due = done_at(emu, doomed.id)
    await until_past(due)  # it fails while the emulator is down
    async with Emulator(config(state, credit_balance_cents=1.0)) as emu, sdk(emu) as client:
        failed = await client.generations.get(doomed.id)
        assert failed.state == "failed"
        assert failed.failure_reason == "Contains blacklisted words"
        assert (await client.credits.get()).credit_balance == start


async def test_a_create_repeated_after_a_restart_counts_as_a_duplicate(tmp_path: Path) -> None:
    """``inspect.duplicate_creates`` sees creates from before the restart."""
    state = tmp_path / "emu.sqlite"
    async with Emulator(config(state)) as emu, sdk(emu) as client:
        await client.generations.image.create(prompt="the same cat", model="photon-1")
    async with Emulator(config(state)) as emu, sdk(emu) as client:
        await client.generations.image.create(prompt="another cat", model="photon-1")
        assert emu.inspect.duplicate_creates == 0
        assert emu.inspect.creates_total == 1
        await client.generations.image.create(prompt="the same cat", model="photon-1")
        assert emu.inspect.duplicate_creates == 1


async def test_a_seeded_emulator_never_hands_out_an_id_twice(tmp_path: Path) -> None:
    """Restarted with the same seed, the emulator skips the ids it already used."""
    state = tmp_path / "emu.sqlite"
    ids = []
    for _ in range(2):
        async with Emulator(config(state, seed=5)) as emu, sdk(emu) as client:
            for n in range(2):
                created = await client.generations.image.create(
                    prompt=f"picture {n}", model="photon-1"
                )
                ids.append(created.id)
    assert len(set(ids)) == 4


async def test_reset_with_generations_empties_the_state_file(tmp_path: Path) -> None:
    """``reset_stats(generations=True)`` forgets the generations on disk too."""
    state = tmp_path / "emu.sqlite"
    async with Emulator(config(state)) as emu, sdk(emu) as client:
        await client.generations.image.create(prompt="a forgotten cat", model="photon-1")
        emu.reset_stats(generations=True)
    async with Emulator(config(state)) as emu, sdk(emu) as client:
        assert (await client.generations.list()).generations == []
        assert (await client.credits.get()).credit_balance == emu.config.credit_balance_cents


async def test_callbacks_resume_after_a_restart(tmp_path: Path) -> None:
    """A generation's later state changes are still announced after a restart."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    state = tmp_path / "emu.sqlite"
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/hook"))
        async with Emulator(config(state, fixed_latency=0.5)) as emu, sdk(emu) as client:
            created = await client.generations.image.create(
                prompt="a called back cat", model="photon-1", callback_url=url
            )
        async with Emulator(config(state)):
            await wait_until(lambda: any(r["state"] == "completed" for r in received), "a callback")
    assert [r["id"] for r in received] == [created.id] * len(received)
    assert [r["state"] for r in received][-1] == "completed"


async def test_a_second_emulator_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """One emulator at a time: the file is locked while it is open."""
    state = tmp_path / "emu.sqlite"
    async with Emulator(config(state)):
        second = Emulator(config(state))
        with pytest.raises(ConfigurationError, match="in use by another emulator"):
            await second.start()
    async with Emulator(config(state)) as emu:
        assert emu.store.records == {}


async def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    """A file SQLite cannot read is a ConfigurationError, not a crash mid-serve."""
    state = tmp_path / "emu.sqlite"
    state.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigurationError, match="not an emulator state file"):
        await Emulator(config(state)).start()


@pytest.mark.slow
async def test_an_answered_create_survives_sigkill_of_the_emulator(tmp_path: Path) -> None:
    """``lumasched emulator --state``: a create that was answered is on disk even
    when the process is killed right after answering it."""
    state = tmp_path / "emu.sqlite"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lumasched.emulator",
        "--port",
        "0",
        "--fixed-latency",
        "60",
        "--state",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        base_url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        async with AsyncLumaAI(auth_token="x", base_url=base_url, max_retries=0) as client:
            created = await client.generations.video.create(
                prompt="killed right after", model="ray-2"
            )
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    async with Emulator(config(state)) as emu:
        kept = emu.generation_json(created.id)
        assert kept is not None and kept["state"] in ("queued", "dreaming")
        assert kept["request"]["prompt"] == "killed right after"


async def test_a_same_id_restart_survives_a_restart(tmp_path: Path) -> None:
    """With ``derived_new_id=False``, an upscale's restart of its source (new
    timeline, new asset version) is what a restarted emulator serves."""
    state = tmp_path / "emu.sqlite"
    settings = {"fixed_latency": 0.05, "derived_new_id": False}
    async with Emulator(config(state, **settings)) as emu, sdk(emu) as client:
        source = await client.generations.video.create(prompt="a slow river", model="ray-2")
        await wait_until(lambda: emu.generation_json(source.id)["state"] == "completed", "done")  # type: ignore[index]
        await client.generations.upscale(source.id, resolution="1080p")
        due = done_at(emu, source.id)
    await until_past(due)
    async with Emulator(config(state, **settings)) as emu:
        served = emu.generation_json(source.id)
        assert served is not None and served["state"] == "completed"
        assert f"/assets/{source.id}/1/video.mp4" in served["assets"]["video"]
        assert len(emu.store.records) == 1
