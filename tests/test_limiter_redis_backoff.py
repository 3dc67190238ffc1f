"""The Redis limiter's heartbeat waits out a Redis outage on the one back-off
(``RetryPolicy``), not on pauses of its own, and starts it over once Redis answers."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.limits._redis_util import redis_retry
from lumasched.limits.redis import RedisLimiter
from tests._poller_fixtures import FakeClock
from tests._redis_fixtures import redis_server

__all__ = ["redis_server"]


class RecordingClock(FakeClock):
    """Fake time that keeps every sleep asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def _sleeps(
    clock: RecordingClock, count: int, *, stale: Callable[[float], bool]
) -> list[float]:
    """The next ``count`` sleeps the limiter asks of ``clock``, past the ``stale``
    ones (a beat already under way when the test switched Redis ends as before)."""
    clock.sleeps.clear()
    with anyio.fail_after(10):
        while True:
            fresh = list(itertools.dropwhile(stale, clock.sleeps))
            if len(fresh) >= count:
                return fresh[:count]
            await anyio.sleep(0.001)


@pytest.mark.redis
async def test_heartbeat_backs_off_on_the_retry_policy_during_an_outage(
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While Redis is down the beat is retried 50 ms, 100 ms, ... up to a second
    apart (the policy's waits), and from 50 ms again after Redis answered."""
    clock = RecordingClock()
    limits = Limits(video=FamilyLimits(2, 10, 1.0))
    limiter = RedisLimiter(
        redis_server,
        limits,
        api_key="sk-backoff",
        namespace="t" + uuid.uuid4().hex[:10],
        lease_ttl=30.0,
        clock=clock,
    )
    renew = limiter._renew

    async def down(*args: Any) -> None:
        raise RedisConnectionError("Redis is down")

    expected = [redis_retry(1.0).backoff(n) for n in range(1, 8)]
    assert expected[0] == 0.05 and expected[-1] == 1.0

    def paced(seconds: float) -> bool:
        return seconds >= 0.9 * limiter.heartbeat

    def backing_off(seconds: float) -> bool:
        return not paced(seconds)

    async with limiter:
        await limiter.acquire(Family.VIDEO, "lease")  # a lease to renew on each beat
        monkeypatch.setattr(limiter, "_renew", down)
        assert await _sleeps(clock, 7, stale=paced) == expected
        monkeypatch.setattr(limiter, "_renew", renew)
        (beat,) = await _sleeps(clock, 1, stale=backing_off)
        assert paced(beat)  # back to the beat's own pace
        monkeypatch.setattr(limiter, "_renew", down)
        assert await _sleeps(clock, 2, stale=paced) == expected[:2]  # the back-off starts over
        monkeypatch.setattr(limiter, "_renew", renew)
        await limiter.release(Family.VIDEO, "lease")
