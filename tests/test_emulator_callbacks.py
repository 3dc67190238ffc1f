"""Callbacks: the generation JSON POSTed on dreaming / completed / failed, with retries."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import anyio
import attrs
import lumaai
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from lumasched.emulator import FAILURE_REASONS, Emulator
from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import wait_terminal
from tests._waiting import wait_until


@attrs.define
class Receiver:
    """A callback endpoint answering the statuses in ``script`` (then 200)."""

    script: list[int] = attrs.field(factory=list)
    received: list[tuple[float, dict]] = attrs.field(factory=list)
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((time.monotonic(), await request.json()))
        status = self.script.pop(0) if self.script else 200
        return web.Response(status=status)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    def states(self) -> list[str]:
        return [payload["state"] for _, payload in self.received]

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {self.states()}"
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        rec.server = server
        yield rec


async def test_callbacks_on_dreaming_and_completed(receiver):
    """A completed job POSTs dreaming then completed, the last with the asset URLs."""
    async with (
        Emulator(fast_emulator_config(fixed_latency=0.1)) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        generation = await client.generations.create(
            model="ray-2", prompt="a cat", callback_url=receiver.url
        )
        await receiver.wait_for(2)
        assert receiver.states() == ["dreaming", "completed"]
        final = receiver.received[-1][1]
        assert final["id"] == generation.id
        assert final["assets"]["video"].startswith(emu.origin)
        assert final["request"]["callback_url"] == receiver.url
        assert emu.inspect.callbacks_delivered == 2
        assert emu.inspect.callbacks_failed == 0


async def test_failed_job_posts_failed_with_reason(receiver):
    """A moderated prompt POSTs only failed (it never dreams), with its failure_reason."""
    async with (
        Emulator(fast_emulator_config()) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        await client.generations.image.create(
            model="photon-1", prompt="gore everywhere", callback_url=receiver.url
        )
        await receiver.wait_for(1)
        await wait_until(lambda: emu.callbacks.pending == 0, "every callback sent")
        assert receiver.states() == ["failed"]
        assert receiver.received[0][1]["failure_reason"] == "Contains blacklisted words"


async def test_non_200_is_retried_three_times_100ms_apart(receiver):
    """A non-200 answer is retried up to 3 times, 100 ms apart; then it gives up."""
    receiver.script = [500, 503, 404, 500]
    async with (
        Emulator(fast_emulator_config()) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        await client.generations.image.create(
            model="photon-1", prompt="gore again", callback_url=receiver.url
        )
        await receiver.wait_for(4)
        # Once the emulator has given up, no fifth attempt can come: no sleep needed.
        with anyio.fail_after(5):
            while emu.inspect.callbacks_failed == 0:
                await asyncio.sleep(0.01)
        times = [t for t, _ in receiver.received]
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.09 <= gap < 0.6 for gap in gaps), gaps  # 100 ms, plus a busy machine
        inspect = emu.inspect
        assert (inspect.callbacks_sent, inspect.callbacks_retried) == (4, 3)
        assert (inspect.callbacks_delivered, inspect.callbacks_failed) == (0, 1)


async def test_retry_then_success(receiver):
    """A callback answered 500 once is delivered on the retry."""
    receiver.script = [500]
    async with (
        Emulator(fast_emulator_config()) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        await client.generations.image.create(
            model="photon-1", prompt="nsfw", callback_url=receiver.url
        )
        await receiver.wait_for(2)
        assert receiver.states() == ["failed", "failed"]
        assert (emu.inspect.callbacks_delivered, emu.inspect.callbacks_retried) == (1, 1)


async def test_unreachable_callback_gives_up_and_close_is_clean():
    """A refused connection counts as a failed attempt; closing with callbacks pending is clean."""
    config = fast_emulator_config(fixed_latency=0.05, callback_retry_delay=0.01)
    async with (
        Emulator(config) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        await client.generations.create(
            model="ray-2", prompt="a cat", callback_url="http://127.0.0.1:9/nowhere"
        )
        await client.generations.create(
            model="ray-2", prompt="a dog", callback_url="http://127.0.0.1:9/later"
        )
        deadline = time.monotonic() + 3
        while emu.inspect.callbacks_failed < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert emu.inspect.callbacks_failed >= 2
    assert emu.callbacks.pending == 0


async def test_duplicated_reordered_and_late_callbacks(receiver):
    """With every knob at 1: each state arrives twice, the final state first, and
    late; deduplicating by (id, state) leaves exactly dreaming and completed."""
    config = fast_emulator_config(
        fixed_latency=0.1, callback_duplicates=1.0, callback_reorder=1.0, callback_delay=0.05
    )
    async with (
        Emulator(config) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        sent = time.monotonic()
        generation = await client.generations.create(
            model="ray-2", prompt="a cat", callback_url=receiver.url
        )
        await receiver.wait_for(4)
        # Nothing is announced before it happened: the job ends 0.1 s after the create.
        assert receiver.received[0][0] - sent >= 0.1
        states = receiver.states()
        assert sorted(states) == ["completed", "completed", "dreaming", "dreaming"]
        assert states[0] == "completed" and states[-1] == "dreaming"
        seen = {(payload["id"], payload["state"]) for _, payload in receiver.received}
        assert seen == {(generation.id, "dreaming"), (generation.id, "completed")}
        stale = [p for _, p in receiver.received if p["state"] == "dreaming"]
        assert all(p["assets"] is None for p in stale)
        assert (emu.inspect.callbacks_duplicated, emu.inspect.callbacks_reordered) == (2, 1)


async def test_callbacks_in_order_once_by_default(receiver):
    """Without the knobs each state is announced once, in order."""
    async with (
        Emulator(fast_emulator_config(fixed_latency=0.05)) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url) as client,
    ):
        await client.generations.create(model="ray-2", prompt="a cat", callback_url=receiver.url)
        await receiver.wait_for(2)
        await client.generations.list()  # a round trip: any third callback would be queued by now
        assert receiver.states() == ["dreaming", "completed"]
        assert emu.inspect.callbacks_duplicated == emu.inspect.callbacks_reordered == 0


@pytest.mark.parametrize("key", list(FAILURE_REASONS))
async def test_every_documented_failure_reason_on_demand(key):
    """A prompt with fail:KEY ends failed with that documented reason, and is refunded."""
    failure = FAILURE_REASONS[key]
    async with (
        Emulator(fast_emulator_config()) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url, max_retries=0) as client,
    ):
        start = (await client.credits.get()).credit_balance
        created = await client.generations.create(model="ray-2", prompt=f"a cat fail:{key}")
        done = await wait_terminal(client, created.id)
        assert (done.state, done.failure_reason) == ("failed", failure.reason)
        assert (await client.credits.get()).credit_balance == pytest.approx(start)
        record = emu.store.get(created.id)
        assert record is not None
        timeline = record.timeline
        assert (timeline.dreaming_at == timeline.done_at) is failure.early


async def test_failure_rates_by_reason():
    """failure_rates makes a fraction of jobs fail with the chosen reason."""
    config = fast_emulator_config(failure_rates={"frame_moderation": 1.0})
    async with (
        Emulator(config) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url, max_retries=0) as client,
    ):
        created = await client.generations.image.create(model="photon-1", prompt="a cat")
        done = await wait_terminal(client, created.id)
        assert done.failure_reason == "Frame moderation failed"
    with pytest.raises(ValueError, match="unknown failure reason"):
        fast_emulator_config(failure_rates={"gpu_on_fire": 0.5})
