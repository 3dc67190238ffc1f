"""The poll loop and the callback receiver against the emulator, over real sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from lumasched.api import Generation, ImageRequest, LumaClient, RetryPolicy
from lumasched.emulator import Emulator
from lumasched.engine.callbacks import CallbackReceiver
from lumasched.engine.poller import LatencyEstimator, Poller, latency_key_for


@asynccontextmanager
async def emulator_client(**config: object) -> AsyncIterator[tuple[Emulator, LumaClient]]:
    async with (
        Emulator(seed=5, **config) as emu,  # type: ignore[arg-type]
        LumaClient("test-key", emu.base_url, retry=RetryPolicy.for_tests()) as client,
    ):
        yield emu, client


async def follow(
    poller: Poller, client: LumaClient, requests: list[ImageRequest]
) -> dict[str, tuple[Generation, float]]:
    """Create every request, watch them all, return each terminal generation and its lag."""
    done: dict[str, tuple[Generation, float]] = {}
    finished = anyio.Event()
    created: dict[str, float] = {}

    async def on_update(g: Generation) -> None:
        if g.is_terminal:
            done[g.id] = (g, time.monotonic() - created[g.id])
            if len(done) == len(requests):
                finished.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.run)
            for request in requests:
                generation = await client.create(request)
                created[generation.id] = time.monotonic()
                poller.watch(generation.id, key=latency_key_for(request), on_update=on_update)
            await finished.wait()
            tg.cancel_scope.cancel()
    return done


async def test_a_batch_is_followed_with_few_status_requests() -> None:
    """Two waves of 8 image jobs of 0.4 s: every one seen completed, <= 2 polls per job."""
    async with emulator_client(fixed_latency=0.4) as (emu, client):
        estimator = LatencyEstimator()
        poller = Poller(client, estimator=estimator)
        first = await follow(poller, client, [ImageRequest(f"cat {i}") for i in range(8)])
        second = await follow(poller, client, [ImageRequest(f"dog {i}") for i in range(8)])
        assert all(
            g.state == "completed" and g.asset_url for g, _ in [*first.values(), *second.values()]
        )
        assert emu.inspect.polls <= 2 * 16
        assert poller.stats().requests == emu.inspect.polls
        # Warm, the loop notices completion within a small fraction of the latency.
        assert max(lag for _, lag in second.values()) < 0.4 * 1.25
        assert estimator.expected(latency_key_for(ImageRequest("x"))) < 0.6


async def test_polling_survives_server_errors() -> None:
    """With a third of status requests answered 500, every job still completes."""
    async with emulator_client(
        fixed_latency=0.2, faults={"server_errors": {"get": 0.3, "list": 0.3}}
    ) as (
        emu,
        client,
    ):
        # The client's own retries are off so the loop sees the errors.
        async with LumaClient("k", emu.base_url, retry=RetryPolicy.never()) as raw:
            poller = Poller(raw, first_probe=0.05, max_interval=0.2)
            done = await follow(poller, client, [ImageRequest(f"owl {i}") for i in range(6)])
        assert len(done) == 6
        assert poller.stats().errors > 0
        assert emu.inspect.faults_injected


async def test_callbacks_hint_the_poller_which_verifies_with_the_api() -> None:
    """Callbacks from the emulator reach the receiver and wake the poller early."""
    async with emulator_client(fixed_latency=0.3) as (emu, client):
        estimator = LatencyEstimator()
        estimator.observe(latency_key_for(ImageRequest("x")), 30.0)  # a wrong, slow estimate
        poller = Poller(client, estimator=estimator)
        async with CallbackReceiver(poller.hint) as receiver:
            requests = [
                ImageRequest(f"fox {i}", callback_url=receiver.callback_url) for i in range(3)
            ]
            started = time.monotonic()
            done = await follow(poller, client, requests)
            elapsed = time.monotonic() - started
            stats = receiver.stats()
        assert len(done) == 3 and elapsed < 5
        assert stats.hints >= 3 and poller.stats().hints >= 3
        assert emu.inspect.callbacks_delivered >= 6  # dreaming + completed for each
