"""InProcessLimiter specifics: exact window arithmetic on a fake clock, selection."""

from __future__ import annotations

import anyio
import pytest

from lumasched.limits import (
    Family,
    FamilyLimits,
    InProcessLimiter,
    Limits,
    default_window_margin,
    make_limiter,
)

V = Family.VIDEO


class JumpClock:
    """A fake clock whose sleep jumps time forward at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


def build(requests: int = 2, concurrency: int = 10) -> Limits:
    return Limits(video=FamilyLimits(concurrency, requests, 60.0))


async def test_window_is_widened_by_the_margin() -> None:
    """After `requests` grants the next waits exactly per_seconds + margin."""
    clock = JumpClock()
    limiter = InProcessLimiter(build(), clock=clock, window_margin=2.0)
    await limiter.acquire(V, "a")
    await limiter.acquire(V, "b")
    await limiter.acquire(V, "c")
    assert clock.now == pytest.approx(1062.0)


async def test_answered_create_counts_one_window_from_its_answer() -> None:
    """A create answered before its window's end counts from the answer, without the margin."""
    clock = JumpClock()
    limiter = InProcessLimiter(build(), clock=clock, window_margin=2.0)
    await limiter.acquire(V, "a")
    await limiter.acquire(V, "b")
    clock.now += 0.5
    await limiter.mark_submitted(V, "a", "gen-a")
    await limiter.release(V, "b")  # refused: the server counted it by now at the latest
    await limiter.acquire(V, "c")
    assert clock.now == pytest.approx(1060.5)
    await limiter.acquire(V, "d")
    assert clock.now == pytest.approx(1060.5)
    assert (await limiter.statistics())[V].window_used == 2


async def test_unanswered_create_keeps_the_margin() -> None:
    """A create unanswered at its window's end counts for the window plus the margin; its
    late answer counts again, one window from then (the server may have counted it then)."""
    clock = JumpClock()
    limiter = InProcessLimiter(build(requests=1), clock=clock, window_margin=2.0)
    await limiter.acquire(V, "a")
    await limiter.acquire(V, "b")
    assert clock.now == pytest.approx(1062.0)
    await limiter.mark_submitted(V, "a", "gen-a")
    await limiter.mark_submitted(V, "b", "gen-b")
    assert (await limiter.statistics())[V].window_used == 2


async def test_default_margin_scales_with_the_window() -> None:
    """The default margin is 3% of the window, clamped to [20 ms, 2 s]."""
    assert default_window_margin(60.0) == pytest.approx(1.8)
    assert default_window_margin(600.0) == 2.0
    assert default_window_margin(0.1) == 0.02


async def test_penalty_without_retry_after_doubles() -> None:
    """Consecutive 429s without Retry-After pause longer each time, capped at a window."""
    clock = JumpClock()
    limiter = InProcessLimiter(build(), clock=clock)
    pauses = []
    for _ in range(7):
        await limiter.note_rate_limited(V, None)
        pauses.append((await limiter.statistics())[V].penalty_remaining)
        clock.now += 100
    assert pauses == [3.0, 6.0, 12.0, 24.0, 48.0, 60.0, 60.0]


async def test_backoff_never_below_the_floor() -> None:
    """Repeated 429 episodes cut the limits down to the floor, never to zero."""
    clock = JumpClock()
    limiter = InProcessLimiter(build(requests=20, concurrency=10), clock=clock)
    for _ in range(10):
        await limiter.note_rate_limited(V, 1.0)
        clock.now += 2
    stats = (await limiter.statistics())[V]
    assert (stats.effective_concurrency, stats.effective_window_limit) == (1, 2)


async def test_same_lease_id_concurrently_is_granted_once() -> None:
    """Two concurrent acquires of one lease id wait together and take one slot."""
    limiter = InProcessLimiter(build(concurrency=1, requests=100))
    await limiter.acquire(V, "holder")
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, V, "x")
        tg.start_soon(limiter.acquire, V, "x")
        await anyio.sleep(0.02)
        await limiter.release(V, "holder")
    stats = (await limiter.statistics())[V]
    assert (stats.held, stats.granted) == (1, 2)


async def test_make_limiter_without_redis_is_in_process() -> None:
    """make_limiter() without a Redis URL gives the in-process limiter."""
    limiter = make_limiter(build())
    assert isinstance(limiter, InProcessLimiter)
    assert "sk-" not in repr(limiter)
