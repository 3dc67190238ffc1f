"""How the client waits and when it gives up: one small value object over tenacity.

``RetryPolicy`` says how many attempts, how much total time, and how long to
wait between attempts (jittered exponential backoff; a sane server
``Retry-After`` wins). *Whether* an error is worth retrying is not the policy's
business: that depends on the operation (a create that may have reached the
server is never retried) and lives in the client.

It is lumasched's one back-off: the client's requests and the claims' calls
while Redis is down (``claims``, ``limits._redis_util.redis_retry``: as long
as the outage lasts) run through ``call`` (tenacity, on the caller's clock);
the loops that are not plain retries take only its waits (``backoff``/``wait``):
a limiter waiting for a slot that meets an outage, its heartbeat and its
wake-up subscription while Redis is down (``limits.redis``), the
rounds of create probes during an API outage (``engine._reachability``) and
status checks rescheduled after a failure (``engine.poller``).

Each failure has one retry layer: a create's connect error is not retried by
the client (``retry_connect=False``) but re-queued by the scheduler, which
paces the probes (``engine._reachability``); a 429 on a create is the
limiter's (``retry_rate_limited=False``); an asset GET is retried by the
downloader only; a status read (``get``/``list``) made by the poller is one
attempt (``retry=False``), the poller rescheduling it with this policy's
back-off (and pausing every check on a 429); a list read by reconcile is one
attempt too, reconcile asking again every ``reconcile_interval`` until its
give-up (``engine._reconcile``); the same reads made directly by library code
are retried by the client, as documented for ``LumaClient``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

__all__ = ["RetryPolicy"]

T = TypeVar("T")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """Attempts, a total time budget, and the backoff between attempts.

    The wait before retry *n* (1-based) is ``min(initial * 2**(n-1), max)``, shrunk
    by up to ``jitter`` (a fraction) at random, like the official SDK. A server
    ``Retry-After`` in ``(0, max_retry_after]`` seconds is used instead. No retry
    starts if its wait would overrun ``total_timeout`` seconds since the first
    attempt. ``zero_waits=True`` (see ``RetryPolicy.for_tests()``) keeps every
    decision but sleeps for 0 s.

    >>> RetryPolicy().backoff(3, jitter_draw=0.0)
    2.0
    >>> RetryPolicy.for_tests().wait(1, retry_after=5.0)
    0.0
    """

    attempts: int = attrs.field(default=3, validator=_positive_int)
    total_timeout: float = attrs.field(default=60.0, validator=_non_negative)
    initial: float = attrs.field(default=0.5, validator=_non_negative)
    max: float = attrs.field(default=8.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.25, validator=_non_negative)
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)
    zero_waits: bool = False

    @classmethod
    def for_tests(cls, attempts: int = 3) -> RetryPolicy:
        """The same decisions with no sleeping, for fast tests."""
        return cls(attempts=attempts, zero_waits=True)

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt only."""
        return cls(attempts=1)

    def backoff(self, retry_number: int, *, jitter_draw: float | None = None) -> float:
        """Seconds before retry ``retry_number`` (1 = the first retry), without Retry-After."""
        # The exponent is capped: a retry loop that lasts an outage counts past
        # 1,024, where 2**n no longer converts to a float.
        base = min(self.initial * 2.0 ** min(retry_number - 1, 64), self.max)
        draw = random.random() if jitter_draw is None else jitter_draw
        return float(base * (1 - min(self.jitter, 1.0) * draw))

    def wait(self, retry_number: int, retry_after: float | None) -> float:
        """Seconds to sleep before retry ``retry_number``; a sane ``retry_after`` wins."""
        if self.zero_waits:
            return 0.0
        if retry_after is not None and 0 < retry_after <= self.max_retry_after:
            return retry_after
        return self.backoff(retry_number)

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        should_retry: Callable[[BaseException], bool],
        retry_after: Callable[[BaseException], float | None] = lambda exc: None,
        on_retry: Callable[[BaseException, float], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Run ``attempt`` until it succeeds, ``should_retry`` says no, or the budget ends.

        The last error is re-raised unchanged. ``on_retry(error, wait)`` is called
        before each wait; ``sleep`` waits (an injected clock's, in the engine).
        """

        # The first attempt runs bare: almost every call succeeds at once, and
        # building tenacity's machinery for it cost about a tenth of a job's CPU.
        started = time.monotonic()
        try:
            return await attempt()
        except Exception as exc:
            if self.attempts == 1 or not should_retry(exc):
                raise
            first: BaseException | None = exc
        elapsed = time.monotonic() - started

        async def replayed() -> T:
            # Tenacity sees the first failure as its attempt 1, so the waits,
            # counts and hooks are what they would have been.
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await attempt()

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return self.wait(state.attempt_number, None if exc is None else retry_after(exc))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and exc is not None:
                on_retry(exc, state.upcoming_sleep)

        retrying = AsyncRetrying(
            # The budget counts from the bare first attempt.
            stop=stop_after_attempt(self.attempts)
            | stop_before_delay(max(0.0, self.total_timeout - elapsed)),
            wait=wait,
            retry=retry_if_exception(should_retry),
            before_sleep=before_sleep,
            reraise=True,
            sleep=sleep,
        )
        return await retrying(replayed)
