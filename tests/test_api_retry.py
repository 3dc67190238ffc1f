"""Retries: the policy's waits and budget, reads retried, creates never blindly re-POSTed."""

from __future__ import annotations

import asyncio
import builtins
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from lumasched.api import LumaClient, RetryPolicy, Timeout, VideoRequest
from lumasched.errors import (
    AmbiguousCreateError,
    APITimeoutError,
    BadRequestError,
    ConnectError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
)
from tests._api_fixtures import API_KEY, BASE, GEN_ID, client, mocked, sent

__all__ = ["client", "mocked"]  # fixtures, imported for pytest

GEN = {"id": GEN_ID, "state": "queued"}
VIDEO = f"{BASE}/generations/video"
REFUSED = aiohttp.ClientConnectorError(
    aiohttp.client_reqrep.ConnectionKey("api.test", 443, True, True, None, None, None),
    OSError(111, "Connection refused"),
)


# -- the policy ------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    """0.5, 1, 2, 4, 8, 8 s, each shrunk by at most 25 % at random."""
    policy = RetryPolicy()
    assert [policy.backoff(n, jitter_draw=0.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert policy.backoff(1, jitter_draw=1.0) == 0.375
    assert all(0.375 <= policy.backoff(1) <= 0.5 for _ in range(50))


def test_backoff_stays_at_the_cap_through_a_long_outage() -> None:
    """Retry 5,000 of a loop that lasts an outage (Redis down) waits the cap, where
    2**4999 would not convert to a float."""
    policy = RetryPolicy(initial=0.05, max=1.0, jitter=0.0)
    assert policy.backoff(5000) == 1.0


async def test_a_policy_waits_on_the_sleep_it_is_given() -> None:
    """``call(sleep=...)``: the waits go to an injected clock, one per retry."""
    slept: list[float] = []
    failures = iter([ConnectionError(), ConnectionError()])

    async def attempt() -> str:
        for exc in failures:
            raise exc
        return "ok"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(initial=0.5, max=8.0, jitter=0.0)
    result = await policy.call(
        attempt, should_retry=lambda exc: isinstance(exc, ConnectionError), sleep=sleep
    )
    assert result == "ok"
    assert slept == [0.5, 1.0]


def test_sane_retry_after_wins() -> None:
    """A Retry-After in (0, 60] s is used; zero, negative or > 60 s falls back to backoff."""
    policy = RetryPolicy(jitter=0.0)
    assert policy.wait(1, 3.0) == 3.0
    assert policy.wait(1, 120.0) == 0.5
    assert policy.wait(2, 0.0) == 1.0
    assert policy.wait(2, None) == 1.0


def test_zero_waits_switch() -> None:
    """for_tests() keeps the decisions but never sleeps."""
    policy = RetryPolicy.for_tests(attempts=5)
    assert policy.attempts == 5 and policy.wait(4, 30.0) == 0.0


def test_policy_rejects_nonsense() -> None:
    """attempts >= 1 and non-negative times."""
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(total_timeout=-1)


class FakeTime:
    """A clock that moves only when slept on (or told to): the budget's arithmetic
    with no real waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_total_time_budget_stops_retrying() -> None:
    """No retry starts whose wait would overrun total_timeout, measured on the
    clock the caller gives (no real time passes here)."""
    clock = FakeTime()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    policy = RetryPolicy(attempts=100, total_timeout=10.0, initial=4.0, max=60.0, jitter=0.0)
    with pytest.raises(OSError):
        await policy.call(
            attempt, should_retry=lambda exc: True, sleep=clock.sleep, monotonic=clock.monotonic
        )
    assert calls == 2  # waits 4 s; the next wait (8 s) would end at 12 s > 10 s
    assert clock.slept == [4.0]  # and it did not sleep that wait first


async def test_the_budget_counts_the_first_attempt_too() -> None:
    """The first attempt runs outside tenacity, yet its time still counts against
    total_timeout: a first attempt that used the budget up is not retried."""
    clock = FakeTime()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        clock.now += 6.0  # a slow first attempt
        raise OSError("down")

    policy = RetryPolicy(attempts=5, total_timeout=5.0, initial=0.0, jitter=0.0)
    with pytest.raises(OSError):
        await policy.call(
            attempt, should_retry=lambda exc: True, sleep=clock.sleep, monotonic=clock.monotonic
        )
    assert calls == 1


async def test_a_first_failure_is_seen_by_the_retry_hooks() -> None:
    """on_retry sees the first attempt's error and wait; a final error is raised unchanged."""
    seen: list[tuple[str, float]] = []
    errors = iter([OSError("one"), OSError("two"), ValueError("final")])

    async def attempt() -> None:
        raise next(errors)

    async def sleep(seconds: float) -> None:
        pass

    policy = RetryPolicy(attempts=5, initial=0.5, jitter=0.0)
    with pytest.raises(ValueError, match="final"):
        await policy.call(
            attempt,
            should_retry=lambda exc: isinstance(exc, OSError),
            on_retry=lambda exc, wait: seen.append((str(exc), wait)),
            sleep=sleep,
        )
    assert seen == [("one", 0.5), ("two", 1.0)]


async def test_retry_after_is_used_for_the_wait() -> None:
    """The policy sleeps the retry_after the error reports."""
    waits: list[float] = []
    outcomes = [RuntimeError("busy"), None]

    async def attempt() -> str:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return "ok"

    result = await RetryPolicy().call(
        attempt,
        should_retry=lambda exc: True,
        retry_after=lambda exc: 0.01,
        on_retry=lambda exc, wait: waits.append(wait),
    )
    assert (result, waits) == ("ok", [0.01])


# -- reads -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
async def test_reads_retry_retryable_statuses(
    client: LumaClient, mocked: aioresponses, status: int
) -> None:
    """A GET answered 408/409/429/5xx is retried and then succeeds."""
    mocked.get(f"{BASE}/generations/{GEN_ID}", status=status, payload={"detail": "x"})
    mocked.get(f"{BASE}/generations/{GEN_ID}", payload=GEN)
    assert (await client.get(GEN_ID)).id == GEN_ID
    assert len(sent(mocked, "GET")) == 2 and client.stats.retries == 1


@pytest.mark.parametrize(
    "exc",
    [REFUSED, builtins.TimeoutError(), aiohttp.ServerDisconnectedError()],
    ids=["refused", "timeout", "disconnected"],
)
async def test_reads_retry_transport_errors(
    client: LumaClient, mocked: aioresponses, exc: Exception
) -> None:
    """Connection errors and timeouts on a read are retried."""
    mocked.delete(f"{BASE}/generations/{GEN_ID}", exception=exc)
    mocked.delete(f"{BASE}/generations/{GEN_ID}", status=204)
    await client.delete(GEN_ID)
    assert len(sent(mocked, "DELETE")) == 2


async def test_reads_do_not_retry_client_errors(client: LumaClient, mocked: aioresponses) -> None:
    """A 404 is final."""
    mocked.get(f"{BASE}/generations/{GEN_ID}", status=404, payload={"detail": "gone"})
    with pytest.raises(NotFoundError):
        await client.get(GEN_ID)
    assert len(sent(mocked, "GET")) == 1


async def test_x_should_retry_overrides(client: LumaClient, mocked: aioresponses) -> None:
    """x-should-retry: false stops a 503 retry; true retries a 400 (as the SDK does)."""
    mocked.get(f"{BASE}/ping", status=503, headers={"x-should-retry": "false"})
    with pytest.raises(InternalServerError):
        await client.ping()
    mocked.get(f"{BASE}/credits", status=400, headers={"x-should-retry": "true"})
    mocked.get(f"{BASE}/credits", payload={"credit_balance": 1})
    assert (await client.credits()).credit_balance == 1
    assert len(sent(mocked, "GET")) == 3


async def test_reads_give_up_after_attempts(mocked: aioresponses) -> None:
    """After `attempts` tries the last error is raised."""
    mocked.get(f"{BASE}/ping", status=503, repeat=True)
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.for_tests(attempts=4)) as c:
        with pytest.raises(InternalServerError):
            await c.ping()
        assert c.stats.retries == 3 and c.stats.errors == 1
    assert len(sent(mocked, "GET")) == 4


# -- creates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        builtins.TimeoutError(),
        aiohttp.ServerTimeoutError("read"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "reset"),
        aiohttp.ClientPayloadError("truncated"),
    ],
    ids=["timeout", "read timeout", "disconnected", "reset", "payload"],
)
async def test_create_that_may_have_arrived_is_ambiguous(
    client: LumaClient, mocked: aioresponses, exc: Exception
) -> None:
    """A failure after sending raises AmbiguousCreateError after exactly one POST."""
    mocked.post(VIDEO, exception=exc, repeat=True)
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create(VideoRequest("abc"))
    assert len(sent(mocked)) == 1
    assert info.value.cause is not None and info.value.cause.__cause__ is exc


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_create_5xx_is_ambiguous(
    client: LumaClient, mocked: aioresponses, status: int
) -> None:
    """A 5xx (or 408) answer to a create is ambiguous and never re-POSTed."""
    mocked.post(VIDEO, status=status, payload={"detail": "oops"}, repeat=True)
    with pytest.raises(AmbiguousCreateError):
        await client.create(VideoRequest("abc"))
    assert len(sent(mocked)) == 1


async def test_create_unreadable_success_is_ambiguous(
    client: LumaClient, mocked: aioresponses
) -> None:
    """A 201 without a generation id may still have started one: ambiguous."""
    mocked.post(VIDEO, status=201, body="<html>ok</html>")
    with pytest.raises(AmbiguousCreateError):
        await client.create(VideoRequest("abc"))


async def test_create_retries_when_the_connection_was_refused(
    client: LumaClient, mocked: aioresponses
) -> None:
    """Could not connect: the server surely did not act, so the create is retried."""
    mocked.post(VIDEO, exception=REFUSED)
    mocked.post(VIDEO, exception=aiohttp.ConnectionTimeoutError())
    mocked.post(VIDEO, status=201, payload=GEN)
    assert (await client.create(VideoRequest("abc"))).id == GEN_ID
    assert len(sent(mocked)) == 3


async def test_create_refused_until_out_of_attempts(mocked: aioresponses) -> None:
    """Refused on every attempt: ConnectError (never ambiguous)."""
    mocked.post(VIDEO, exception=REFUSED, repeat=True)
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.for_tests(attempts=3)) as c:
        with pytest.raises(ConnectError):
            await c.create(VideoRequest("abc"))
    assert len(sent(mocked)) == 3


async def test_create_retries_429_by_default(client: LumaClient, mocked: aioresponses) -> None:
    """A 429 means nothing started: retried when retry_rate_limited (the default)."""
    mocked.post(VIDEO, status=429, payload={"detail": "Too many concurrent generations"})
    mocked.post(VIDEO, status=201, payload=GEN)
    assert (await client.create(VideoRequest("abc"))).id == GEN_ID
    assert len(sent(mocked)) == 2


async def test_create_429_raises_at_once_without_retry_rate_limited(
    client: LumaClient, mocked: aioresponses
) -> None:
    """retry_rate_limited=False hands the 429 (with retry_after) straight to the caller."""
    mocked.post(VIDEO, status=429, headers={"Retry-After": "2"}, repeat=True)
    with pytest.raises(RateLimitError) as info:
        await client.create(VideoRequest("abc"), retry_rate_limited=False)
    assert info.value.retry_after == 2.0
    assert len(sent(mocked)) == 1


async def test_create_429_honours_x_should_retry_false(
    client: LumaClient, mocked: aioresponses
) -> None:
    """x-should-retry: false on a 429 is not retried."""
    mocked.post(VIDEO, status=429, headers={"x-should-retry": "false"}, repeat=True)
    with pytest.raises(RateLimitError):
        await client.create(VideoRequest("abc"))
    assert len(sent(mocked)) == 1


async def test_create_4xx_is_final_even_with_x_should_retry(
    client: LumaClient, mocked: aioresponses
) -> None:
    """A 400 on a create is raised, not retried, whatever the header says."""
    mocked.post(
        VIDEO,
        status=400,
        payload={"detail": "Prompt is required"},
        headers={"x-should-retry": "true"},
        repeat=True,
    )
    with pytest.raises(BadRequestError, match="Prompt is required"):
        await client.create(VideoRequest("abc"))
    assert len(sent(mocked)) == 1


# -- on a real socket ------------------------------------------------------------------


@pytest.fixture
async def slow_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A local server whose create never answers in time; it records every POST."""
    posts: list[str] = []
    release = asyncio.Event()

    async def create(request: web.Request) -> web.Response:
        posts.append(await request.text())
        await release.wait()
        return web.json_response(GEN, status=201)

    app = web.Application()
    app.router.add_post("/v1/generations/video", create)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", posts
    finally:
        release.set()
        await runner.cleanup()


async def test_real_read_timeout_posts_exactly_once(
    slow_server: tuple[str, list[str]],
) -> None:
    """Over TCP: a create whose answer times out is sent once and reported ambiguous."""
    base, posts = slow_server
    async with LumaClient(
        API_KEY, base, retry=RetryPolicy.for_tests(), timeout=Timeout(connect=1, read=0.2)
    ) as c:
        with pytest.raises(AmbiguousCreateError) as info:
            await c.create(VideoRequest("abc"))
    assert posts == ['{"model":"ray-2","prompt":"abc"}']
    assert isinstance(info.value.cause, APITimeoutError)


async def test_real_connection_refused_is_retried_then_connect_error() -> None:
    """Over TCP: a closed port refuses every attempt; the create ends as ConnectError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with LumaClient(
        API_KEY, f"http://127.0.0.1:{port}/v1", retry=RetryPolicy.for_tests(attempts=2)
    ) as c:
        with pytest.raises(ConnectError):
            await c.create(VideoRequest("abc"))
        assert c.stats.creates == {"video": 2}
