"""Background loops (the limiter's and the claims' heartbeats) never die silently:
a failure is logged once and raised by the owner's next call and by its exit."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from lumasched._background import Supervisor, Tolerance
from lumasched.claims import ClaimStatus, ClaimStore
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.limits.redis import RedisLimiter
from tests._poller_fixtures import FakeClock
from tests._redis_fixtures import redis_process, redis_server
from tests.test_multihost_claims import client

__all__ = ["client", "redis_process", "redis_server"]

log = logging.getLogger("tests.background")


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def test_a_failed_loop_is_logged_once_and_raised_by_check_and_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first loop to fail stops its siblings; its error is kept, not lost."""
    stopped = anyio.Event()

    async def failing() -> None:
        raise KeyError("boom")

    async def sibling() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    supervisor = Supervisor("test-loops", log)
    supervisor.start(failing, sibling)
    await wait_for(lambda: supervisor.failure is not None)
    assert stopped.is_set()
    with pytest.raises(KeyError, match="boom"):
        supervisor.check()
    with pytest.raises(KeyError, match="boom"):
        await supervisor.aclose()
    stops = [r for r in caplog.records if r.getMessage() == "test-loops stopped"]
    assert len(stops) == 1 and stops[0].exc_info is not None


async def test_loops_stopped_by_close_raise_nothing() -> None:
    """Closing cancels the loops; a clean stop is no failure."""
    supervisor = Supervisor("test-loops", log)
    supervisor.start(anyio.sleep_forever)
    await anyio.sleep(0)
    await supervisor.aclose()
    supervisor.check()
    closed_at_once = Supervisor("test-loops", log)
    closed_at_once.start(anyio.sleep_forever)
    await closed_at_once.aclose()  # before its task ever ran


def test_tolerance_retries_until_its_budget_of_clock_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unexpected errors are logged in one line each while they last less than the
    budget (on the injected clock); past it the error is raised; a success resets it."""
    clock = FakeClock()
    tolerance = Tolerance("heartbeat", 5.0, clock, log)
    for _ in range(3):
        tolerance.failed(ValueError("odd reply"))
        clock.now += 2.0
    assert sum("heartbeat failed (ValueError: odd reply)" in m for m in caplog.messages) == 3
    with pytest.raises(ValueError, match="odd reply"):
        tolerance.failed(ValueError("odd reply"))
    tolerance.ok()
    tolerance.failed(ValueError("odd reply"))  # a new run of errors: a new budget


@pytest.mark.redis
async def test_redis_limiter_heartbeat_failing_past_the_ttl_stops_the_limiter(
    redis_server: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat that keeps failing (not an outage) is retried, then surfaces:
    acquire raises its error, and so does leaving the limiter."""
    limits = Limits(video=FamilyLimits(2, 10, 1.0))
    limiter = RedisLimiter(
        redis_server,
        limits,
        api_key="sk-bg",
        namespace="t" + uuid.uuid4().hex[:8],
        lease_ttl=0.3,
        heartbeat=0.05,
    )

    async def broken_beat() -> None:
        raise TypeError("unexpected reply")

    monkeypatch.setattr(limiter, "_beat", broken_beat)
    with pytest.raises(TypeError, match="unexpected reply"):
        async with limiter:
            await limiter.acquire(Family.VIDEO, "first")  # granted: the beat is not needed
            await wait_for(lambda: limiter._background.failure is not None)
            await limiter.acquire(Family.VIDEO, "second")
    assert any("limiter heartbeat failed (TypeError" in m for m in caplog.messages)
    assert sum(m == "lumasched-limits-background stopped" for m in caplog.messages) == 1


@pytest.mark.redis
async def test_claims_heartbeat_lives_through_an_unexpected_error(
    client: aioredis.Redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of any type in a beat (here, after the renewal) does not stop the
    heartbeat: the claim stays renewed; failing past the TTL, the store raises."""
    manifest = uuid.uuid4().hex[:12]
    holder = ClaimStore(client, api_key="sk-bg", manifest=manifest, owner="holder", ttl=0.6)
    rival = ClaimStore(client, api_key="sk-bg", manifest=manifest, owner="rival", ttl=0.6)
    beats, odd_until, renewed = 0, 3, False
    renew, learn = holder._scripts["RENEW"], holder._membership.learn

    async def counted_renew(*args: Any, **kwargs: Any) -> Any:
        nonlocal beats, renewed
        beats += 1
        reply = await renew(*args, **kwargs)
        renewed = True
        return reply

    async def broken_learn(*args: Any) -> None:
        # Only the heartbeat renews: its replies (the first three) are "odd".
        nonlocal renewed
        after_renew, renewed = renewed, False
        if after_renew and beats <= odd_until:
            raise LookupError("odd sites reply")
        await learn(*args)

    holder._scripts["RENEW"] = counted_renew  # type: ignore[assignment]
    monkeypatch.setattr(holder._membership, "learn", broken_learn)
    with pytest.raises(LookupError):  # leaving the store raises what stopped it
        async with holder:
            assert (await holder.claim("a")).status is ClaimStatus.CLAIMED
            await wait_for(lambda: beats >= 5)  # beats went on after three failures
            assert (await rival.claim("a")).status is ClaimStatus.TAKEN
            assert sum("claims heartbeat failed (LookupError" in m for m in caplog.messages) == 3
            odd_until = 10**9  # from now on, every beat's reply is odd
            await wait_for(lambda: holder._background.failure is not None)
            with pytest.raises(LookupError):
                await holder.claim("b")
            with pytest.raises(LookupError):
                await holder.before_create("a", body={}, sent_at=0.0, lease_id="l")
