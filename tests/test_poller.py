"""The poll loop on a virtual clock: request budget, detection lag, errors, hints."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import attrs
import pytest

from lumasched.engine.poller import (
    LatencyEstimator,
    LatencyKey,
    Poller,
    PollerStats,
    latency_key_for,
)
from lumasched.errors import InternalServerError, RateLimitError, TransportError
from tests._poller_fixtures import (
    FakeClock,
    FakeGeneration,
    FakeStatusClient,
    best_makespan,
)

KEY: LatencyKey = ("ray-2", "720p", "5s")


@attrs.define
class Batch:
    makespan: float
    requests: int
    lags: list[float]
    stats: PollerStats
    updates: list[tuple[str, str]]


async def run_batch(
    latencies: list[float],
    concurrency: int,
    *,
    keys: list[LatencyKey] | None = None,
    estimator: LatencyEstimator | None = None,
    queued_for: float = 0.0,
    create_gap: float = 0.0,
    faults: list[Exception] | None = None,
    **poller_kwargs: Any,
) -> Batch:
    """Run ``latencies`` as a concurrency-bound batch through ``Poller.run``.

    A new job is created the moment a terminal state is delivered (as the
    scheduler does), no sooner than ``create_gap`` after the previous create.
    """
    clock = FakeClock()
    client = FakeStatusClient(clock)
    client.faults.extend(faults or [])
    poller = Poller(client, clock=clock, estimator=estimator, **poller_kwargs)
    start = clock.now
    todo = list(enumerate(latencies))
    todo.reverse()
    lags: list[float] = []
    updates: list[tuple[str, str]] = []
    done = anyio.Event()
    last = start
    last_create = -math.inf

    def submit() -> None:
        nonlocal last_create
        if not todo:
            return
        index, latency = todo.pop()
        # A rate-bound scheduler cannot create sooner than create_gap after the last one.
        if clock.now < last_create + create_gap:
            clock.now = last_create + create_gap
        last_create = clock.now
        gid = client.create(latency, queued_for=queued_for)

        async def on_update(g: FakeGeneration) -> None:
            nonlocal last
            updates.append((g.id, g.state))
            if g.is_terminal:
                job = client.jobs[g.id]
                lags.append(clock.now - job.created - job.latency)
                last = clock.now
                if len(lags) == len(latencies):
                    done.set()
                submit()

        key = keys[index] if keys else KEY
        poller.watch(gid, key=key, on_update=on_update)

    for _ in range(concurrency):
        submit()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.run)
            await done.wait()
            tg.cancel_scope.cancel()
    return Batch(last - start, client.requests, lags, poller.stats(), updates)


async def test_concurrency_bound_batch_is_near_best_and_cheap() -> None:
    """120 jobs of 1 s at concurrency 10 finish within 5% of 12 s at <= 2 requests/job."""
    batch = await run_batch([1.0] * 120, 10)
    assert batch.makespan <= 1.05 * best_makespan([1.0] * 120, 10)
    assert batch.requests / 120 <= 2
    assert batch.stats.requests == batch.requests


async def test_jittered_latencies_stay_within_budget() -> None:
    """With latencies jittered +-10%, the batch is still within 5% of best at <= 2 requests/job."""
    rng = random.Random(7)
    latencies = [rng.uniform(0.9, 1.1) for _ in range(150)]
    batch = await run_batch(latencies, 10)
    assert batch.makespan <= 1.05 * best_makespan(latencies, 10)
    assert batch.requests / len(latencies) <= 2


async def test_rate_bound_batch_detects_each_job_quickly() -> None:
    """Staggered creates (one per 0.1 s) are each noticed within 0.05 s, at <= 2 requests/job."""
    lags, requests = await _staggered(Poller)
    warm = lags[20:]
    assert max(warm) <= 0.05
    assert requests / 60 <= 2


@pytest.mark.parametrize("probe_ratio", [1.05, 1.08, 1.1, 1.15])
async def test_an_estimate_learnt_too_high_comes_down(probe_ratio: float) -> None:
    """However late the first completion was noticed (the cold probes' spacing decides),
    the estimate comes down to the latency: a generation last seen running long before,
    in a list read for others, does not pin it to that late first sighting."""
    lags, _ = await _staggered(partial(Poller, probe_ratio=probe_ratio))
    warm = lags[20:]
    assert statistics.median(warm) <= 0.02
    assert max(warm) <= 0.05


async def _staggered(make: Callable[..., Poller]) -> tuple[list[float], int]:
    """60 generations of 2 s created 0.1 s apart: each one's detection lag, and requests."""
    clock = FakeClock()
    client = FakeStatusClient(clock)
    poller = make(client, clock=clock)
    lags: list[float] = []

    async def on_update(g: FakeGeneration) -> None:
        if g.is_terminal:
            job = client.jobs[g.id]
            lags.append(clock.now - job.created - job.latency)

    creates = [clock.now + 0.1 * i for i in range(60)]
    next_poll: float | None = None
    while creates or next_poll is not None:
        if creates and (next_poll is None or creates[0] <= next_poll):
            clock.now = creates.pop(0)
            poller.watch(client.create(2.0), key=KEY, on_update=on_update)
            next_poll = await poller.poll_once()
        else:
            assert next_poll is not None
            clock.now = max(clock.now, next_poll)
            next_poll = await poller.poll_once()
            if next_poll is not None:
                next_poll = max(next_poll, clock.now + 0.02)
    assert len(lags) == 60
    return lags, client.requests


async def test_estimator_learns_each_key_separately() -> None:
    """Fast image and slow video jobs in one batch are each checked near their own latency."""
    keys: list[LatencyKey] = [("photon-1", None, None), ("ray-2", "720p", "5s")] * 40
    latencies = [0.3 if k[0] == "photon-1" else 3.0 for k in keys]
    est = LatencyEstimator()
    batch = await run_batch(latencies, 8, keys=keys, estimator=est)
    assert est.expected(keys[0]) == pytest.approx(0.3, rel=0.1)
    assert est.expected(keys[1]) == pytest.approx(3.0, rel=0.1)
    assert batch.requests / len(keys) <= 2
    assert batch.makespan <= 1.05 * best_makespan(latencies, 8)


@attrs.define
class Rig:
    """A poller on a fake clock and API, recording what it delivers."""

    clock: FakeClock
    client: FakeStatusClient
    poller: Poller
    seen: list[str] = attrs.Factory(list)
    done: list[str] = attrs.Factory(list)

    async def on_update(self, g: FakeGeneration) -> None:
        self.seen.append(g.state)
        if g.is_terminal:
            self.done.append(g.id)

    def watch(self, gid: str, key: LatencyKey = KEY) -> str:
        self.poller.watch(gid, key=key, on_update=self.on_update)
        return gid

    async def drain(self) -> None:
        """Run rounds (at least 50 ms apart) until nothing is watched."""
        while (next_at := await self.poller.poll_once()) is not None:
            self.clock.now = max(next_at, self.clock.now + 0.05)


def rig(expected: dict[LatencyKey, float] | None = None, **kwargs: Any) -> Rig:
    """A Rig whose estimator already learnt ``expected`` latencies."""
    clock = FakeClock()
    client = FakeStatusClient(clock)
    est = LatencyEstimator()
    for key, seconds in (expected or {}).items():
        est.observe(key, seconds)
    return Rig(clock, client, Poller(client, clock=clock, estimator=est, **kwargs))


async def test_state_changes_are_delivered_once_each_then_forgotten() -> None:
    """on_update sees each new state once, the terminal one last, then the id is dropped."""
    r = rig({KEY: 1.0})
    gid = r.watch(r.client.create(3.0, queued_for=0.5))
    r.clock.now += 0.2
    r.poller.hint(gid)
    await r.drain()
    assert r.seen == ["queued", "dreaming", "completed"]
    assert r.poller.watching == 0
    assert await r.poller.poll_once() is None


async def test_unknown_states_are_not_terminal() -> None:
    """A state the API never documented keeps the generation watched until a real terminal one."""
    r = rig()
    r.watch(r.client.create(0.0, states=[(0.0, "pending_new_state"), (1.0, "completed")]))
    await r.drain()
    assert r.seen == ["pending_new_state", "completed"]


async def test_failing_status_requests_do_not_stop_the_loop() -> None:
    """Transport errors and 5xx on get/list are counted and retried; every job still finishes."""
    faults: list[Exception] = [
        TransportError("connection reset"),
        InternalServerError(502),
        InternalServerError(503),
        TransportError("timeout"),
    ]
    batch = await run_batch([1.0] * 30, 10, faults=faults)
    assert len(batch.lags) == 30
    assert batch.stats.errors == 4


async def test_rate_limited_status_requests_pause_polling() -> None:
    """A 429 on a status request pauses the loop for Retry-After before the next request."""
    r = rig()
    r.client.faults.append(RateLimitError(retry_after=5.0))
    r.watch(r.client.create(0.1))
    r.clock.now += 1.0
    assert await r.poller.poll_once() == pytest.approx(r.clock.now + 5.0)
    assert r.client.requests == 1
    r.clock.now += 4.0
    await r.poller.poll_once()
    assert r.client.requests == 1
    r.clock.now += 1.0
    await r.poller.poll_once()
    assert r.client.requests == 2 and r.poller.watching == 0


async def test_hint_pulls_the_check_forward() -> None:
    """A hint makes a not-yet-due generation be checked (by the API) on the next round."""
    r = rig({KEY: 10.0})
    gid = r.watch(r.client.create(2.0))
    r.clock.now += 2.5
    assert await r.poller.poll_once() == pytest.approx(r.clock.now + 7.5)
    assert r.client.requests == 0
    r.poller.hint(gid)
    r.poller.hint("someone-elses-id")
    r.clock.now += 0.05
    await r.poller.poll_once()
    assert r.seen == ["completed"]
    assert r.client.gets == 1
    stats = r.poller.stats()
    assert (stats.hints, stats.hints_ignored) == (1, 1)


async def test_a_hint_is_verified_not_trusted() -> None:
    """A hint for a generation still running delivers nothing but the real state."""
    r = rig({KEY: 10.0})
    gid = r.watch(r.client.create(8.0))
    r.clock.now += 1.0
    r.poller.hint(gid)
    r.clock.now += 0.05
    await r.poller.poll_once()
    assert r.seen == ["dreaming"]
    assert r.poller.watching == 1


async def test_a_hint_flood_is_bounded() -> None:
    """Hints beyond max_hints for one generation are ignored, so forged callbacks cost little."""
    r = rig({KEY: 100.0}, max_hints=3)
    gid = r.watch(r.client.create(50.0))
    for _ in range(10):
        r.clock.now += 1.0
        r.poller.hint(gid)
        await r.poller.poll_once()
    assert r.client.gets == 3
    assert (r.poller.stats().hints, r.poller.stats().hints_ignored) == (3, 7)


async def test_ids_missing_from_the_list_fall_back_to_get() -> None:
    """Generations pushed off the first page by newer ones are found with get instead."""
    r = rig({KEY: 1.0}, list_page_size=5, max_list_pages=1)
    ours = [r.watch(r.client.create(1.0)) for _ in range(4)]
    for _ in range(10):  # someone else's generations, newer than ours
        r.client.create(100.0)
    r.clock.now += 1.0
    await r.poller.poll_once()
    assert sorted(r.done) == ours
    assert (r.client.lists, r.client.gets) == (1, 4)
    assert r.poller.stats().missed_in_list == 4


async def test_list_pages_answer_every_watched_generation_for_free() -> None:
    """One list call delivers due generations and, early, others already finished on that page."""
    image: LatencyKey = ("photon-1", None, None)
    r = rig({KEY: 1.0, image: 5.0})
    early = r.watch(r.client.create(0.2), key=image)
    due = [r.watch(r.client.create(1.0)) for _ in range(3)]
    r.clock.now += 1.0
    await r.poller.poll_once()
    assert sorted(r.done) == sorted([early, *due])
    assert r.client.requests == 1
    assert r.poller.stats().early == 1


async def test_unwatch_stops_delivery() -> None:
    """After unwatch, the generation is neither polled nor delivered."""
    r = rig()
    gid = r.watch(r.client.create(0.1))
    r.poller.unwatch(gid)
    r.clock.now += 5
    assert await r.poller.poll_once() is None
    assert r.seen == [] and r.client.requests == 0


async def test_a_vanished_generation_reports_an_error() -> None:
    """Repeated 404s call on_error once and forget the id."""
    r = rig(not_found_limit=3)
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    r.poller.watch("gen-deleted", key=KEY, on_update=r.on_update, on_error=on_error)
    await r.drain()
    assert len(errors) == 1 and r.client.gets == 3 and r.seen == []
    assert r.poller.stats().gone == 1


async def test_a_raising_callback_does_not_stop_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in on_update is logged; other generations are still delivered."""
    r = rig()

    async def boom(g: FakeGeneration) -> None:
        raise RuntimeError("bug in the caller")

    r.poller.watch(r.client.create(0.1), key=KEY, on_update=boom)
    good = r.watch(r.client.create(0.1))
    await r.drain()
    assert r.done == [good]
    assert "bug in the caller" in caplog.text


async def _ignore(g: Any) -> None:
    return None


async def _run_real_time(poller: Poller, body: Callable[[], Any]) -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.run)
            await body()
            tg.cancel_scope.cancel()


class RealTimeClient(FakeStatusClient):
    """The fake API on the real monotonic clock."""

    def __init__(self) -> None:
        super().__init__(FakeClock())
        self.clock = _RealNow()  # type: ignore[assignment]


class _RealNow(FakeClock):
    @property  # type: ignore[override]
    def now(self) -> float:
        return anyio.current_time()

    @now.setter
    def now(self, value: float) -> None:
        pass


async def test_watch_and_hint_wake_a_sleeping_loop() -> None:
    """run() asleep on a long wait wakes for a hint, and for a watch due sooner."""
    client = RealTimeClient()
    est = LatencyEstimator()
    est.observe(KEY, 30.0)
    est.observe(("photon-1", None, None), 0.05)
    poller = Poller(client, estimator=est, min_interval=0.01)
    delivered: dict[str, anyio.Event] = {}

    async def on_update(g: FakeGeneration) -> None:
        if g.is_terminal:
            delivered[g.id].set()

    async def body() -> None:
        slow = client.create(0.0)
        delivered[slow] = anyio.Event()
        poller.watch(slow, key=KEY, on_update=on_update)
        await anyio.sleep(0.05)  # the loop is now asleep until ~30 s
        poller.hint(slow)
        with anyio.fail_after(1):
            await delivered[slow].wait()
        quick = client.create(0.0)
        delivered[quick] = anyio.Event()
        poller.watch(quick, key=("photon-1", None, None), on_update=on_update)
        with anyio.fail_after(1):
            await delivered[quick].wait()

    await _run_real_time(poller, body)
    assert client.requests == 2


def test_estimator_borrows_from_other_keys_until_it_has_its_own() -> None:
    """An unseen key is scaled by what other keys taught; its own data then takes over."""
    est = LatencyEstimator(alpha=0.5)
    assert est.expected(("ray-2", "720p", "5s")) == 60.0
    assert est.expected(("ray-2", "1080p", "9s")) == pytest.approx(60 * 2 * 1.8)
    est.observe(("ray-2", "720p", "5s"), 0.6)
    assert est.expected(("photon-1", None, None)) == pytest.approx(0.15)
    assert est.expected(("ray-2", "1080p", "9s")) == pytest.approx(0.6 * 2 * 1.8)
    est.observe(("photon-1", None, None), 1.0)
    est.observe(("photon-1", None, None), 2.0)
    assert est.expected(("photon-1", None, None)) == pytest.approx(1.5)
    assert est.samples() == 3 and est.samples(("photon-1", None, None)) == 2


def test_estimator_snapshot_round_trips() -> None:
    """to_dict/from_dict restore what was learnt."""
    est = LatencyEstimator()
    est.observe(("ray-2", "720p", "5s"), 12.0)
    est.observe(("upscale", "4k", None), 7.0)
    again = LatencyEstimator.from_dict(est.to_dict())
    for key in [("ray-2", "720p", "5s"), ("upscale", "4k", None), ("photon-1", None, None)]:
        assert again.expected(key) == est.expected(key)


def test_latency_key_uses_model_or_kind() -> None:
    """The key is (model, resolution, duration); model-less requests use their kind."""

    @attrs.frozen
    class Video:
        model: str = "ray-2"
        resolution: str | None = "1080p"
        duration: str | None = "9s"
        kind: str = "video"

    @attrs.frozen
    class Upscale:
        generation_id: str = "g"
        resolution: str | None = "4k"
        model: None = None
        kind: str = "upscale"

    assert latency_key_for(Video()) == ("ray-2", "1080p", "9s")
    assert latency_key_for(Upscale()) == ("upscale", "4k", None)


async def test_cancelling_the_loop_mid_request_loses_no_generation() -> None:
    """run() cancelled while a get hangs exits at once; run again, the generation is delivered."""
    r = rig({KEY: 1.0})
    gid = r.watch(r.client.create(1.0))
    entered = anyio.Event()
    release = anyio.Event()
    real_get = r.client.get

    async def hanging_get(generation_id: str) -> FakeGeneration:
        entered.set()
        await release.wait()
        return await real_get(generation_id)

    r.client.get = hanging_get  # type: ignore[method-assign]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.poller.run)
            await entered.wait()
            tg.cancel_scope.cancel()
    assert r.seen == [] and r.poller.watching == 1
    release.set()
    await r.drain()
    assert r.done == [gid]
