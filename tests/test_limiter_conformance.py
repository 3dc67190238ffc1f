"""One behaviour suite for every ``Limiter``: the in-process one and the Redis one.

Windows are small (0.3-0.5 s) so the suite stays fast; grant times are taken
on the test's own monotonic clock right after ``acquire`` returns.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
import pytest

from lumasched.limits import Family, FamilyLimits, InProcessLimiter, Limiter, Limits
from tests._redis_fixtures import redis_server  # noqa: F401
from tests._waiting import wait_until_async

V = Family.VIDEO

NewLimiter = Callable[..., Awaitable[Limiter]]


def lid() -> str:
    return uuid.uuid4().hex


def limits_of(concurrency: int, requests: int, per_seconds: float) -> Limits:
    return Limits(
        video=FamilyLimits(concurrency, requests, per_seconds),
        image=FamilyLimits(40, 80, 60.0),
    )


@pytest.fixture(params=["inprocess", "redis"])
async def new_limiter(request: pytest.FixtureRequest) -> AsyncIterator[NewLimiter]:
    """A factory of entered limiters. For Redis, limiters made in one test share
    state (one namespace) like processes sharing one API key; for in-process,
    they are the same instance."""
    kind = request.param
    namespace = "t" + uuid.uuid4().hex[:10]
    made: dict[str, Limiter] = {}
    async with AsyncExitStack() as stack:

        async def make(limits: Limits, **kwargs: Any) -> Limiter:
            kwargs.setdefault("window_margin", 0.03)
            if kind == "inprocess":
                kwargs.pop("poll_max", None)
                if "one" not in made:
                    made["one"] = await stack.enter_async_context(
                        InProcessLimiter(limits, **kwargs)
                    )
                return made["one"]
            from lumasched.limits.redis import RedisLimiter

            url = request.getfixturevalue("redis_server")
            limiter = RedisLimiter(
                url,
                limits,
                api_key="sk-test-conformance",
                namespace=namespace,
                lease_ttl=kwargs.pop("lease_ttl", 2.0),
                **kwargs,
            )
            await limiter.bootstrap()
            return await stack.enter_async_context(limiter)

        yield make


def max_in_window(times: list[float], window: float) -> int:
    """The largest number of times inside any half-open window of this length."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_concurrency_cap_reached_never_exceeded(new_limiter: NewLimiter) -> None:
    """Many tasks: at most `concurrency` hold a slot at once, and the cap is reached."""
    limiter = await new_limiter(limits_of(3, 1000, 1.0))
    current = peak = done = 0

    async def worker() -> None:
        nonlocal current, peak, done
        lease = lid()
        await limiter.acquire(V, lease)
        current += 1
        peak = max(peak, current)
        await anyio.sleep(0.03)
        current -= 1
        await limiter.release(V, lease)
        done += 1

    async with anyio.create_task_group() as tg:
        for _ in range(15):
            tg.start_soon(worker)
    assert (peak, done) == (3, 15)
    assert (await limiter.statistics())[V].held == 0


async def test_every_sliding_window_within_limit(new_limiter: NewLimiter) -> None:
    """Grants never exceed `requests` in any window of `per_seconds`, and reach it."""
    per = 0.4
    limiter = await new_limiter(limits_of(100, 4, per))
    grants: list[float] = []

    async def worker() -> None:
        lease = lid()
        await limiter.acquire(V, lease)
        grants.append(time.monotonic())
        await limiter.release(V, lease)

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(worker)
    assert len(grants) == 12
    assert max_in_window(grants, per) == 4
    # three windows' worth took at least two windows, and not much more
    assert 2 * per <= time.monotonic() - start < 2 * per + 1.5


async def test_slot_and_token_taken_together(new_limiter: NewLimiter) -> None:
    """A waiter blocked by the rate holds no slot; one blocked by slots spends no token."""
    limiter = await new_limiter(limits_of(1, 2, 0.5))
    first, second = lid(), lid()
    await limiter.acquire(V, first)
    with anyio.move_on_after(0.15):
        await limiter.acquire(V, second)
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.window_used) == (1, 1)
    await limiter.release(V, first)
    with anyio.fail_after(2):
        await limiter.acquire(V, second)
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.window_used) == (1, 2)
    await limiter.release(V, second)


async def test_slot_only_acquire_spends_no_rate_token(new_limiter: NewLimiter) -> None:
    """acquire(rate=False) takes a slot despite a full window or 429 pause, spending no token."""
    limiter = await new_limiter(limits_of(4, 1, 1.0))  # 2 slots once the 429 halves it
    created, restored, nxt = lid(), lid(), lid()
    await limiter.acquire(V, created)
    await limiter.note_rate_limited(V, 5.0)
    with anyio.fail_after(1):
        await limiter.acquire(V, restored, rate=False)
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.window_used, stats.granted) == (2, 1, 1)
    with anyio.move_on_after(0.15) as scope:
        await limiter.acquire(V, nxt)
    assert scope.cancelled_caught
    for lease in (created, restored):
        await limiter.release(V, lease)


async def test_slot_only_acquire_waits_for_a_free_slot(new_limiter: NewLimiter) -> None:
    """acquire(rate=False) still respects the concurrency cap, in turn with other waiters."""
    limiter = await new_limiter(limits_of(1, 100, 1.0))
    holder, restored = lid(), lid()
    await limiter.acquire(V, holder)
    with anyio.move_on_after(0.15) as scope:
        await limiter.acquire(V, restored, rate=False)
    assert scope.cancelled_caught
    await limiter.release(V, holder)
    with anyio.fail_after(2):
        await limiter.acquire(V, restored, rate=False)
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.window_used) == (1, 1)
    await limiter.release(V, restored)


async def test_fifo_first_waiter_served_first(new_limiter: NewLimiter) -> None:
    """When a slot frees, the waiter that came first gets it, not the quickest poller."""
    slow = await new_limiter(limits_of(1, 1000, 1.0), poll_max=0.5)
    fast = await new_limiter(limits_of(1, 1000, 1.0), poll_max=0.02)
    holder = lid()
    await fast.acquire(V, holder)
    order: list[str] = []

    async def wait(limiter: Limiter, name: str) -> None:
        lease = lid()
        await limiter.acquire(V, lease)
        order.append(name)
        await limiter.release(V, lease)

    async def waiting(count: int) -> bool:
        return (await fast.statistics())[V].waiting == count

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, slow, "slow")
        await wait_until_async(partial(waiting, 1), "the slow poller queued")
        tg.start_soon(wait, fast, "fast")
        await wait_until_async(partial(waiting, 2), "the fast poller queued behind it")
        await fast.release(V, holder)
    assert order == ["slow", "fast"]


async def test_fast_and_slow_waiters_share_fairly(new_limiter: NewLimiter) -> None:
    """Two competing loops, one polling 25x slower: grants split about evenly."""
    slow = await new_limiter(limits_of(1, 1000, 1.0), poll_max=0.5)
    fast = await new_limiter(limits_of(1, 1000, 1.0), poll_max=0.02)
    grants = {"slow": 0, "fast": 0}
    deadline = time.monotonic() + 1.0

    async def loop(limiter: Limiter, name: str) -> None:
        while time.monotonic() < deadline:
            lease = lid()
            await limiter.acquire(V, lease)
            grants[name] += 1
            await anyio.sleep(0.03)
            await limiter.release(V, lease)

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop, fast, "fast")
        tg.start_soon(loop, slow, "slow")
    assert grants["slow"] >= 4
    assert abs(grants["fast"] - grants["slow"]) <= 2


async def test_cancelled_waiter_leaks_nothing(new_limiter: NewLimiter) -> None:
    """A waiter cancelled while queued takes no slot and does not block the queue."""
    limiter = await new_limiter(limits_of(1, 1000, 1.0))
    holder, victim = lid(), lid()
    await limiter.acquire(V, holder)
    with anyio.move_on_after(0.1) as scope:
        await limiter.acquire(V, victim)
    assert scope.cancelled_caught
    await limiter.release(V, holder)
    with anyio.fail_after(1):
        await limiter.acquire(V, lid())
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.waiting) == (1, 0)


async def test_cancellation_storm_leaks_nothing(new_limiter: NewLimiter) -> None:
    """Many acquires cancelled at random moments: afterwards every slot is free."""
    limiter = await new_limiter(limits_of(2, 1000, 1.0))
    granted = released = 0
    rng = random.Random(7)

    async def attempt(timeout: float) -> None:
        nonlocal granted, released
        lease = lid()
        with anyio.move_on_after(timeout):
            await limiter.acquire(V, lease)
            granted += 1
            await anyio.sleep(0.005)
        # like a caller's finally: give back whatever it may hold
        with anyio.CancelScope(shield=True):
            await limiter.release(V, lease)
        released += 1

    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(attempt, rng.uniform(0.0, 0.03))
            await anyio.sleep(rng.uniform(0, 0.004))
    assert granted > 0 and released == 60
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.waiting) == (0, 0)
    with anyio.fail_after(1):
        await limiter.acquire(V, lid())
        await limiter.acquire(V, lid())


async def test_acquire_and_release_are_idempotent(new_limiter: NewLimiter) -> None:
    """Acquiring a held lease id again takes nothing more; releasing twice is harmless."""
    limiter = await new_limiter(limits_of(2, 1000, 1.0))
    lease = lid()
    await limiter.acquire(V, lease)
    await limiter.acquire(V, lease)
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.window_used, stats.granted) == (1, 1, 1)
    await limiter.release(V, lease)
    await limiter.release(V, lease)
    await limiter.release(V, "never-acquired")
    assert (await limiter.statistics())[V].held == 0


async def test_429_pauses_and_backs_off_then_recovers(new_limiter: NewLimiter) -> None:
    """A 429 pauses grants for Retry-After and halves the limits; successes restore them."""
    limiter = await new_limiter(limits_of(4, 10, 1.0))
    await limiter.note_rate_limited(V, 0.3)
    await limiter.note_rate_limited(V, 0.3)  # same episode: no second cut
    stats = (await limiter.statistics())[V]
    assert (stats.effective_concurrency, stats.effective_window_limit) == (2, 5)
    assert 0.1 < stats.penalty_remaining <= 0.3
    assert stats.rate_limited == 2
    start = time.monotonic()
    a, b, c = lid(), lid(), lid()
    await limiter.acquire(V, a)
    assert time.monotonic() - start >= 0.25
    await limiter.acquire(V, b)
    with anyio.move_on_after(0.1) as scope:
        await limiter.acquire(V, c)
    assert scope.cancelled_caught  # only 2 of 4 slots while backed off
    for _ in range(30):
        await limiter.note_success(V)
    stats = (await limiter.statistics())[V]
    assert (stats.effective_concurrency, stats.effective_window_limit) == (4, 10)
    with anyio.fail_after(1):
        await limiter.acquire(V, c)
    for lease in (a, b, c):
        await limiter.release(V, lease)


async def test_429_without_retry_after_uses_own_backoff(new_limiter: NewLimiter) -> None:
    """Without Retry-After the pause is the limiter's own, a fraction of the window."""
    limiter = await new_limiter(limits_of(4, 10, 1.0))
    await limiter.note_rate_limited(V, None)
    stats = (await limiter.statistics())[V]
    assert 0 < stats.penalty_remaining <= 1.0


async def test_statistics_report_holders_window_and_waiters(new_limiter: NewLimiter) -> None:
    """statistics() shows held slots, window use and waiters per family."""
    limiter = await new_limiter(limits_of(1, 5, 1.0))
    first = lid()
    await limiter.acquire(V, first)
    await limiter.mark_submitted(V, first, "gen-1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, V, lid())
        with anyio.fail_after(5):  # until the second acquire waits
            while (stats := await limiter.statistics())[V].waiting == 0:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    v = stats[V]
    assert (v.held, v.waiting, v.window_used, v.concurrency_limit, v.window_limit) == (
        1,
        1,
        1,
        1,
        5,
    )
    assert stats[Family.IMAGE].held == 0
    await limiter.release(V, first)
