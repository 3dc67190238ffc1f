"""RedisLimiter specifics: worker processes sharing one key, crashes, Redis
restarts, outages and cancellation mid-command, against a private redis-server."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from lumasched.emulator import Emulator
from lumasched.limits import Family, FamilyLimits, Limits, make_limiter
from lumasched.limits._redis_util import as_text as _text
from lumasched.limits.redis import (
    FamilyState,
    RedisLimiter,
    account_id,
    family_prefix,
    inspect_state,
)
from tests._redis_fixtures import (  # noqa: F401
    RedisServer,
    redis_process,
    redis_server,
    spawn_worker,
)
from tests._waiting import wait_until_async
from tests.test_limiter_conformance import max_in_window

V, IMG = Family.VIDEO, Family.IMAGE
KEY = "sk-shared-test-key"


def ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


def video(concurrency: int, requests: int, per_seconds: float) -> Limits:
    return Limits(video=FamilyLimits(concurrency, requests, per_seconds))


async def wait_for_state(
    redis: aioredis.Redis,
    namespace: str,
    family: Family,
    predicate: Callable[[FamilyState], object],
    what: str,
) -> FamilyState:
    """The family's state once ``predicate`` holds for it (read-only polling)."""
    state: FamilyState | None = None

    async def reached() -> object:
        nonlocal state
        state = await inspect_state(redis, namespace, account_id(KEY), family)
        return predicate(state)

    await wait_until_async(reached, what)
    assert state is not None
    return state


async def wait_for_silence(
    redis: aioredis.Redis, namespace: str, family: Family, seconds: float
) -> None:
    """Until no limiter call has reached the family's state for ``seconds`` of
    Redis time (the clock its scripts judge silences by)."""
    meta = f"{family_prefix(namespace, account_id(KEY), family)}:meta"

    async def quiet() -> bool:
        sec, usec = await redis.time()
        last = await redis.hget(meta, "last_ms")
        assert last is not None, "no limiter call reached this state yet"
        return sec * 1000 + usec // 1000 - int(last) > seconds * 1000

    await wait_until_async(quiet, f"{seconds} s without a call")


@pytest.fixture
async def client(redis_server: str) -> AsyncIterator[aioredis.Redis]:  # noqa: F811
    redis = aioredis.Redis.from_url(redis_server)
    yield redis
    await redis.aclose()


@pytest.mark.slow
async def test_worker_processes_share_limits_exactly(redis_server: str) -> None:  # noqa: F811
    """Three processes on one key: zero 429s; peak concurrency and window use hit the limits."""
    limits = Limits(video=FamilyLimits(2, 4, 1.0), image=FamilyLimits(4, 8, 1.0))
    namespace = ns()
    async with RedisLimiter(redis_server, limits, api_key=KEY, namespace=namespace) as lim:
        await lim.bootstrap()
    async with Emulator(api_key=KEY, limits=limits, fixed_latency=0.3, jitter=0.0) as emu:
        workers = [
            spawn_worker(
                "emulator",
                url=redis_server,
                namespace=namespace,
                limits={"video": [2, 4, 1.0], "image": [4, 8, 1.0]},
                base_url=emu.base_url,
                jobs={"video": 4, "image": 8},
                tasks=3,
                window_margin=0.2,  # 20%: above the lag of three busy processes on 2 cores
            )
            for _ in range(3)
        ]
        results = []
        try:
            for proc in workers:
                out, _ = await anyio.to_thread.run_sync(partial(proc.communicate, timeout=45))
                assert proc.returncode == 0
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        stats = emu.inspect
    assert sum(int(r["created"]) for r in results) == 36
    assert sum(int(r["rate_limited"]) for r in results) == 0
    assert stats.rate_limited_total == 0
    assert stats.families[V].peak_concurrency == 2
    assert stats.families[IMG].peak_concurrency == 4
    assert stats.families[V].peak_window_arrivals == 4
    assert stats.families[IMG].peak_window_arrivals == 8


@pytest.mark.slow
async def test_killed_holder_slots_return_within_ttl_or_are_adopted(
    redis_server: str,  # noqa: F811
) -> None:
    """A SIGKILLed holder's slots return within the TTL, or once adopted if submitted."""
    namespace, ttl = ns(), 1.0
    limits = video(3, 100, 1.0)
    async with RedisLimiter(redis_server, limits, api_key=KEY, namespace=namespace) as lim:
        await lim.bootstrap()
        proc = spawn_worker(
            "holder",
            url=redis_server,
            namespace=namespace,
            limits={"video": [3, 100, 1.0], "image": [40, 80, 60.0]},
            lease_ttl=ttl,
        )
        assert proc.stdout is not None
        with anyio.fail_after(20):
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == "READY"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert (await lim.statistics())[V].held == 2

        async def only_the_orphan_left() -> bool:
            stats = (await lim.statistics())[V]
            # the submitted generation still counts; its lease ran out a little after
            # the other's (renewed by mark_submitted): wait for both
            return (stats.held, stats.orphaned) == (1, 1)

        # well within the default lease TTL (30 s): the short one is what frees them
        await wait_until_async(only_the_orphan_left, "the pending lease freed", timeout=10)
        orphans = await lim.adopt_orphans(V)
        assert [(o.lease_id, o.generation_id) for o in orphans] == [
            ("submitted-lease", "gen-of-the-dead")
        ]
        assert (await lim.statistics())[V].held == 1
        await lim.release(V, "submitted-lease")
        assert (await lim.statistics())[V].held == 0
    proc.stdout.close()


async def test_redis_restart_mid_run_no_violation_no_loss(
    redis_process: RedisServer,  # noqa: F811
) -> None:
    """Redis restarting empty mid-run: every job finishes within the cap and the window."""
    per, cap, rate = 1.0, 3, 8
    limits = video(cap, rate, per)
    namespace = ns()
    kw = dict(api_key=KEY, namespace=namespace, lease_ttl=0.6, heartbeat=0.15, poll_max=0.1)
    grants: list[float] = []
    current = peak = done = 0

    async def job(limiter: RedisLimiter, hold: float) -> None:
        nonlocal current, peak, done
        lease = uuid.uuid4().hex
        await limiter.acquire(V, lease)
        grants.append(time.monotonic())
        current += 1
        peak = max(peak, current)
        await anyio.sleep(hold)
        current -= 1
        await limiter.release(V, lease)
        done += 1

    async def worker(limiter: RedisLimiter, first_hold: float) -> None:
        for n in range(2):
            await job(limiter, first_hold if n == 0 else 0.05)

    async with (
        RedisLimiter(redis_process.url, limits, window_margin=0.05, **kw) as a,  # type: ignore[arg-type]
        RedisLimiter(redis_process.url, limits, window_margin=0.05, **kw) as b,  # type: ignore[arg-type]
    ):
        await a.bootstrap()
        async with anyio.create_task_group() as tg:
            for n, limiter in enumerate((a, b) * 4):
                # two jobs span the restart: their leases must be re-registered
                tg.start_soon(worker, limiter, 0.8 if n < 2 else 0.05)
            while len(grants) < rate:  # the window is full: now Redis forgets it
                await anyio.sleep(0.01)
            redis_process.stop()
            await anyio.sleep(0.1)
            redis_process.start()
        assert a.reregistered + b.reregistered >= 1
        redis = aioredis.Redis.from_url(redis_process.url)
        state = await inspect_state(redis, namespace, account_id(KEY), V)
        await redis.aclose()
    assert done == 16
    assert peak <= cap
    assert max_in_window(grants, per) <= rate
    assert state.counters["lost_count"] >= 1
    assert state.counters["regranted_count"] >= 1


async def test_lost_state_holds_new_grants_until_holders_reregister(
    redis_process: RedisServer,  # noqa: F811
) -> None:
    """After FLUSHALL, heartbeats re-register leases and new grants wait: the cap holds."""
    limits = video(1, 100, 0.3)
    kw = dict(api_key=KEY, namespace=ns(), lease_ttl=0.6, heartbeat=0.1)
    async with (
        RedisLimiter(redis_process.url, limits, **kw) as a,  # type: ignore[arg-type]
        RedisLimiter(redis_process.url, limits, **kw) as b,  # type: ignore[arg-type]
    ):
        await a.bootstrap()
        await b.acquire(V, "earlier")  # b has worked before: it knows the state
        await b.release(V, "earlier")
        await a.acquire(V, "held")
        redis = aioredis.Redis.from_url(redis_process.url)
        await redis.flushall()
        await redis.aclose()
        with anyio.move_on_after(1.2) as scope:
            await b.acquire(V, "newcomer")
        assert scope.cancelled_caught  # the re-registered lease fills the only slot
        assert a.reregistered == 1
        stats = (await b.statistics())[V]
        assert (stats.held, stats.waiting) == (1, 0)
        await a.release(V, "held")
        with anyio.fail_after(1):
            await b.acquire(V, "newcomer")


async def test_redis_down_pauses_acquire_and_nothing_raises(
    redis_process: RedisServer,  # noqa: F811
) -> None:
    """With Redis down acquire waits and nothing raises; when it is back the acquire is granted."""
    limits = video(2, 100, 0.3)
    async with RedisLimiter(
        redis_process.url, limits, api_key=KEY, namespace=ns(), lease_ttl=0.5, hold=0.2
    ) as limiter:
        await limiter.bootstrap()
        await limiter.acquire(V, "before")
        redis_process.stop()
        await limiter.release(V, "before")
        await limiter.note_rate_limited(V, 0.01)
        await limiter.note_success(V)
        tries = 0
        acquire_script = limiter._scripts["ACQUIRE"]

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal tries
            tries += 1
            return await acquire_script(*args, **kwargs)

        limiter._scripts["ACQUIRE"] = counted  # type: ignore[assignment]
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, V, "during")
            with anyio.fail_after(10):  # no fixed sleep: until it has tried three times
                while tries < 3:
                    await anyio.sleep(0.01)
            assert "during" not in [lid for (_, lid) in limiter._held]
            redis_process.start()
        assert (V, "during") in limiter._held
        await limiter.release(V, "during")


async def test_cancel_during_command_gives_the_grant_back(redis_server: str) -> None:  # noqa: F811
    """An acquire cancelled mid-EVALSHA waits for the outcome and gives back what it got."""
    limits = video(1, 100, 1.0)
    async with RedisLimiter(
        redis_server, limits, api_key=KEY, namespace=ns(), heartbeat=10
    ) as limiter:
        await limiter.bootstrap()
        await limiter.acquire(V, "warm-up")  # scripts loaded, connection open
        await limiter.release(V, "warm-up")
        redis = aioredis.Redis.from_url(redis_server)
        await redis.execute_command("CLIENT", "PAUSE", 300, "ALL")
        start = time.monotonic()
        with anyio.move_on_after(0.05) as scope:
            await limiter.acquire(V, "victim")
        assert scope.cancelled_caught
        assert time.monotonic() - start >= 0.2  # it waited for the command's outcome
        stats = (await limiter.statistics())[V]
        assert (stats.held, stats.waiting, stats.granted) == (0, 0, 2)
        await redis.aclose()
        with anyio.fail_after(1):
            await limiter.acquire(V, "next")


async def test_outage_longer_than_ttl_extends_leases_and_holds(
    redis_server: str,  # noqa: F811
) -> None:
    """After an outage longer than a lease TTL, live leases are extended and new grants held."""
    limits = video(5, 100, 0.3)
    namespace = ns()
    async with RedisLimiter(
        redis_server,
        limits,
        api_key=KEY,
        namespace=namespace,
        lease_ttl=0.4,
        heartbeat=0.1,
        hold=2.0,  # outlasts any lag of this test's reads on a busy machine
    ) as limiter:
        await limiter.bootstrap()
        await limiter.acquire(V, "survivor")
        redis = aioredis.Redis.from_url(redis_server)
        await redis.execute_command("CLIENT", "PAUSE", 700, "ALL")
        # the first heartbeat after the pause sees the gap
        state = await wait_for_state(
            redis, namespace, V, lambda s: s.counters.get("gap_count"), "the gap seen"
        )
        await redis.aclose()
        assert state.counters.get("gap_count") == 1
        assert limiter.reregistered == 0  # extended, not reaped and re-inserted
        stats = (await limiter.statistics())[V]
        assert stats.held == 1 and state.hold_remaining > 0
        await limiter.release(V, "survivor")


async def test_a_longer_lease_ttl_elsewhere_is_not_an_outage(
    redis_server: str,  # noqa: F811
) -> None:
    """A worker with a short lease TTL (``lumasched run --claim-ttl``) starting after
    a quiet spell longer than its TTL, next to a holder whose longer lease is still
    live, is granted at once: no outage hold, no forced re-registration."""
    limits, namespace = video(4, 100, 1.0), ns()
    async with RedisLimiter(redis_server, limits, api_key=KEY, namespace=namespace) as a:
        await a.acquire(V, "long-generation")  # default TTL: 30 s, heartbeat 10 s
        await wait_for_silence(a._client, namespace, V, 0.4)
        async with RedisLimiter(
            redis_server, limits, api_key=KEY, namespace=namespace, lease_ttl=0.3, hold=2.0
        ) as b:
            with anyio.fail_after(1.0):
                await b.acquire(V, "cli-job")
            state = await inspect_state(b._client, namespace, account_id(KEY), V)
            await b.release(V, "cli-job")
        await a.release(V, "long-generation")
    assert "gap_count" not in state.counters and state.hold_remaining == 0
    assert a.reregistered == 0


async def test_leases_of_workers_gone_longer_than_orphan_max_cost_no_hold(
    redis_server: str,  # noqa: F811
) -> None:
    """A worker that died holding slots (one submitted) and a start after a silence
    longer than orphan_max: its leftovers are dropped and the newcomer gets the
    whole cap at once, without an outage hold."""
    limits, namespace = video(2, 100, 1.0), ns()
    kw = dict(api_key=KEY, namespace=namespace, lease_ttl=0.3, orphan_max=0.6, hold=2.0)
    async with RedisLimiter(redis_server, limits, **kw) as dead:  # type: ignore[arg-type]
        await dead.acquire(V, "left-pending")
        await dead.acquire(V, "left-submitted")
        await dead.mark_submitted(V, "left-submitted", "gen-of-the-dead")
        dead._held.clear()  # it dies: nothing released, nothing handed over
    redis = aioredis.Redis.from_url(redis_server)
    # past orphan_max + lease_ttl since its last call: its submitted lease is stale too
    await wait_for_silence(redis, namespace, V, 1.0)
    await redis.aclose()
    async with RedisLimiter(redis_server, limits, **kw) as newcomer:  # type: ignore[arg-type]
        with anyio.fail_after(1.0):
            await newcomer.acquire(V, "a")
            await newcomer.acquire(V, "b")
        state = await inspect_state(newcomer._client, namespace, account_id(KEY), V)
        await newcomer.release(V, "a")
        await newcomer.release(V, "b")
    assert sorted(lease.lease_id for lease in state.leases) == ["a", "b"]
    assert state.counters.get("stale_count") == 1 and "gap_count" not in state.counters
    assert state.hold_remaining == 0


async def test_one_workers_429_pauses_every_worker(redis_server: str) -> None:  # noqa: F811
    """One worker's Retry-After pauses the family for every worker and shares the back-off."""
    limits = video(4, 100, 1.0)
    kw = dict(api_key=KEY, namespace=ns())
    async with (
        RedisLimiter(redis_server, limits, **kw) as a,  # type: ignore[arg-type]
        RedisLimiter(redis_server, limits, **kw) as b,  # type: ignore[arg-type]
    ):
        await a.bootstrap()
        await a.note_rate_limited(V, 0.3)
        start = time.monotonic()
        await b.acquire(V, "x")
        assert time.monotonic() - start >= 0.25
        assert (await b.statistics())[V].effective_concurrency == 2
        await b.release(V, "x")


async def test_keys_never_contain_the_api_key(
    redis_server: str,  # noqa: F811
    client: aioredis.Redis,
) -> None:
    """Redis keys name the account by a hash; the key appears nowhere."""
    namespace = ns()
    async with RedisLimiter(
        redis_server, video(2, 10, 1.0), api_key=KEY, namespace=namespace
    ) as lim:
        await lim.bootstrap()
        await lim.acquire(V, "a")
        await lim.mark_submitted(V, "a", "gen")
        keys = [k.decode() async for k in client.scan_iter(match=f"{namespace}:*")]
        assert keys and all(KEY not in k and account_id(KEY) in k for k in keys)
        for key in keys:
            if (await client.type(key)) == b"hash":
                assert KEY.encode() not in b"".join(
                    a + b for a, b in (await client.hgetall(key)).items()
                )
        assert KEY not in repr(lim)
        await lim.release(V, "a")


async def test_first_start_grants_without_a_hold(redis_server: str) -> None:  # noqa: F811
    """A worker that never saw any state creates it and is granted at once."""
    async with RedisLimiter(redis_server, video(2, 10, 1.0), api_key=KEY, namespace=ns()) as lim:
        with anyio.fail_after(0.5):
            await lim.acquire(V, "first")
        assert (await lim.statistics())[V].hold_remaining == 0
        await lim.release(V, "first")


async def test_workers_starting_together_on_an_empty_redis_are_granted_at_once(
    redis_process: RedisServer,  # noqa: F811
) -> None:
    """Four processes with the default lease settings start together on an empty
    Redis, with no bootstrap: the whole first window of grants comes well within
    one heartbeat (no lost-state or outage hold), and no loss is recorded."""
    namespace, workers, each = ns(), 4, 2
    redis = aioredis.Redis.from_url(redis_process.url)
    assert await redis.dbsize() == 0
    procs = [
        spawn_worker(
            "burst",
            stdin=True,
            url=redis_process.url,
            namespace=namespace,
            limits={"video": [8, workers * each, 60.0]},
            leases=each,
            patience=5.0,
        )
        for _ in range(workers)
    ]
    results = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            with anyio.fail_after(30):
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == "READY"
        assert await redis.dbsize() == 0  # connected, nothing created yet
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = await anyio.to_thread.run_sync(partial(proc.communicate, timeout=30))
            assert proc.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        state = await inspect_state(redis, namespace, account_id(KEY), V)
    finally:
        await redis.aclose()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    delays = [delay for result in results for delay in result["delays"]]
    assert len(delays) == workers * each and None not in delays
    assert max(delays) < 2.0  # the default heartbeat is 10 s and a hold 15 s
    assert state.counters["granted"] == workers * each
    assert "lost_count" not in state.counters and "gap_count" not in state.counters
    assert state.hold_remaining == 0


async def test_dead_waiter_blocks_the_queue_only_briefly(redis_server: str) -> None:  # noqa: F811
    """A dead waiter at the queue's head is dropped after the waiter TTL; the next one gets in."""
    limits = video(1, 100, 1.0)
    async with RedisLimiter(
        redis_server, limits, api_key=KEY, namespace=ns(), poll_max=0.05
    ) as limiter:
        await limiter.acquire(V, "holder")
        # a waiter that queues once and then vanishes (its process was killed)
        config = limiter._families[V]
        refused = await limiter._call(
            "ACQUIRE", V, ["dead-ticket", "dead-lease", "ghost", 1, 100, config.window_ms]
        )
        assert _text(refused[2]) == "full"
        await limiter.release(V, "holder")
        start = time.monotonic()
        # the waiter TTL is 4 x poll_max + 0.5 s = 0.7 s: a dead waiter kept for good
        # would fail this; an upper bound any tighter would fail on a busy machine
        with anyio.fail_after(5):
            await limiter.acquire(V, "next")
        assert time.monotonic() - start > 0.3
        await limiter.release(V, "next")


def test_make_limiter_with_a_redis_url_shares_through_redis() -> None:
    """make_limiter(redis_url=...) gives a RedisLimiter keyed by the hashed API key."""
    limiter = make_limiter(Limits(), redis_url="redis://127.0.0.1:1/0", api_key=KEY)
    assert isinstance(limiter, RedisLimiter)
    assert limiter.account == account_id(KEY) and KEY not in repr(limiter)
