"""The in-process limiter: the account's limits for one process."""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Self

import anyio
import anyio.lowlevel
import attrs

from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched.api._taxonomy import Family
from lumasched.limits._base import (
    BUILD_TIER,
    DECREASE_FACTOR,
    DEFAULT_MIN_FACTOR,
    FamilyLimits,
    FamilyStatistics,
    Limits,
    OrphanLease,
    backoff_pause,
    default_window_margin,
    max_penalty,
    recovery_step,
    scaled,
)

__all__ = ["InProcessLimiter"]

_MISSING = object()


@attrs.define(eq=False)
class _Waiter:
    lease_id: str
    rate: bool = True
    wake: anyio.Event = attrs.field(factory=anyio.Event)
    done: anyio.Event = attrs.field(factory=anyio.Event)


class _Family:
    """One family's state. Every mutation is synchronous: no await between a
    check and the grant it allows."""

    def __init__(
        self,
        family: Family,
        limits: FamilyLimits,
        margin: float,
        min_factor: float,
        recovery: float | None,
    ) -> None:
        self.family = family
        self.limits = limits
        self.window = limits.per_seconds + margin
        self.min_factor = min_factor
        self.recovery = recovery_step(limits) if recovery is None else recovery
        self.held: dict[str, str | None] = {}
        self.log: list[float] = []
        """When each create counted in the window stops counting, ascending."""
        self.unanswered: dict[str, float] = {}
        """Lease -> its entry in ``log`` while its create's fate is unknown."""
        self.queue: deque[_Waiter] = deque()
        self.pending: dict[str, _Waiter] = {}
        self.penalty_until = -math.inf
        self.decrease_after = -math.inf
        self.factor = 1.0
        self.consecutive_429 = 0
        self.rate_limited = 0
        self.granted = 0

    @property
    def effective_concurrency(self) -> int:
        return scaled(self.limits.concurrency, self.factor)

    @property
    def effective_requests(self) -> int:
        return scaled(self.limits.requests, self.factor)

    def prune(self, now: float) -> None:
        del self.log[: bisect.bisect_right(self.log, now)]

    def blocked_for(self, now: float, *, rate: bool = True) -> float | None:
        """0 if a grant is possible now; seconds until one may be (penalty or
        rate); None if only a release can help. Without ``rate``, only the
        concurrency cap counts."""
        if rate and now < self.penalty_until:
            return self.penalty_until - now
        if len(self.held) >= self.effective_concurrency:
            return None
        if not rate:
            return 0.0
        self.prune(now)
        over = len(self.log) - self.effective_requests
        if over >= 0:
            return max(1e-3, self.log[over] - now)
        return 0.0

    def grant(self, lease_id: str, now: float, *, rate: bool = True) -> None:
        self.held[lease_id] = None
        if rate:
            # No entry ends later than a new grant's: the log stays sorted.
            self.log.append(now + self.window)
            self.unanswered[lease_id] = now + self.window
            self.granted += 1

    def answered(self, lease_id: str, now: float) -> None:
        """The create of ``lease_id`` was answered (or surely never sent) by ``now``.

        The server counted its arrival at the latest now, so from ``now +
        per_seconds`` it is out of every window the server can count, exactly,
        with no margin for the request's own delays: the margin stays only on
        creates still unanswered at their window's end.
        """
        until = self.unanswered.pop(lease_id, None)
        if until is None:
            return
        at = bisect.bisect_left(self.log, until)
        if at < len(self.log) and self.log[at] == until:
            del self.log[at]
        bisect.insort(self.log, now + self.limits.per_seconds)

    def kick_head(self) -> None:
        if self.queue:
            self.queue[0].wake.set()

    def statistics(self, now: float) -> FamilyStatistics:
        self.prune(now)
        return FamilyStatistics(
            family=self.family,
            concurrency_limit=self.limits.concurrency,
            effective_concurrency=self.effective_concurrency,
            held=len(self.held),
            waiting=len(self.queue),
            window_used=len(self.log),
            window_limit=self.limits.requests,
            effective_window_limit=self.effective_requests,
            penalty_remaining=max(0.0, self.penalty_until - now),
            rate_limited=self.rate_limited,
            granted=self.granted,
        )


class InProcessLimiter:
    """The account's limits for one process: the default ``Limiter``.

    Per family, a concurrency cap and an exact sliding log of grants: in any
    window of ``per_seconds + window_margin`` seconds at most ``requests``
    grants. A grant's create once answered (``mark_submitted``, or ``release``
    when it was refused or never sent) counts from its answer instead, for
    ``per_seconds`` exactly: the server cannot have counted it later than that,
    so the margin only covers creates still in flight at their window's end.
    A slot and a rate token are taken together, waiters are served strictly
    first come, first served, and a waiter cancelled while waiting takes
    nothing. A 429 (``note_rate_limited``) pauses the family and halves
    its effective limits; ``note_success`` wins them back step by step, never
    above the configured limits.

    ::

        async with InProcessLimiter(Limits()) as limiter:
            await limiter.acquire(Family.VIDEO, lease_id)
            try:
                ...  # create, then poll the generation to a terminal state
            finally:
                await limiter.release(Family.VIDEO, lease_id)

    Bound to the event loop it is first used in. For several processes sharing
    one API key use ``lumasched.limits.redis.RedisLimiter``.
    """

    def __init__(
        self,
        limits: Limits = BUILD_TIER,
        *,
        clock: Clock = SYSTEM_CLOCK,
        window_margin: float | None = None,
        min_factor: float = DEFAULT_MIN_FACTOR,
        recovery: float | None = None,
    ) -> None:
        if window_margin is not None and window_margin < 0:
            raise ValueError("window_margin must be >= 0")
        if not 0 < min_factor <= 1:
            raise ValueError("min_factor must be in (0, 1]")
        self.limits = limits
        self._clock = clock
        self._families = {
            family: _Family(
                family,
                limits[family],
                default_window_margin(limits[family].per_seconds)
                if window_margin is None
                else window_margin,
                min_factor,
                recovery,
            )
            for family in Family
        }

    def __repr__(self) -> str:
        return f"InProcessLimiter({self.limits!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def acquire(self, family: Family, lease_id: str, *, rate: bool = True) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        state = self._families[Family(family)]
        while (other := state.pending.get(lease_id)) is not None:
            await other.done.wait()
        if lease_id in state.held:
            return
        now = self._clock.monotonic()
        if not state.queue and state.blocked_for(now, rate=rate) == 0:
            state.grant(lease_id, now, rate=rate)
            return
        waiter = _Waiter(lease_id, rate)
        state.queue.append(waiter)
        state.pending[lease_id] = waiter
        try:
            while True:
                delay: float | None = None
                if state.queue[0] is waiter:
                    now = self._clock.monotonic()
                    delay = state.blocked_for(now, rate=rate)
                    if delay == 0:
                        state.queue.popleft()
                        state.grant(lease_id, now, rate=rate)
                        return
                await self._wait(waiter, delay)
        finally:
            if waiter in state.queue:
                state.queue.remove(waiter)
            del state.pending[lease_id]
            waiter.done.set()
            state.kick_head()

    async def _wait(self, waiter: _Waiter, delay: float | None) -> None:
        waiter.wake = anyio.Event()
        if delay is None:
            await waiter.wake.wait()
        else:
            # The timeout runs on the injected clock, whichever it is (a fake one in
            # tests): one clock for every wait, never anyio's own beside it.
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._timer, delay, tg.cancel_scope)
                await waiter.wake.wait()
                tg.cancel_scope.cancel()

    async def _timer(self, delay: float, scope: anyio.CancelScope) -> None:
        await self._clock.sleep(delay)
        scope.cancel()

    async def release(self, family: Family, lease_id: str) -> None:
        state = self._families[Family(family)]
        state.answered(lease_id, self._clock.monotonic())
        if state.held.pop(lease_id, _MISSING) is not _MISSING:
            state.kick_head()

    async def mark_submitted(self, family: Family, lease_id: str, generation_id: str) -> None:
        state = self._families[Family(family)]
        if lease_id in state.held:
            state.held[lease_id] = generation_id
        state.answered(lease_id, self._clock.monotonic())
        # The token may now end sooner than the head of the queue was told.
        state.kick_head()

    async def note_rate_limited(self, family: Family, retry_after: float | None) -> None:
        state = self._families[Family(family)]
        now = self._clock.monotonic()
        state.rate_limited += 1
        state.consecutive_429 += 1
        if retry_after is None or retry_after < 0:
            pause = backoff_pause(state.limits, state.consecutive_429)
        else:
            pause = min(retry_after, max_penalty(state.limits))
        state.penalty_until = max(state.penalty_until, now + pause)
        # 429s answering requests sent before the pause began do not cut again.
        if now >= state.decrease_after:
            state.factor = max(state.min_factor, state.factor * DECREASE_FACTOR)
            state.decrease_after = state.penalty_until

    async def note_success(self, family: Family) -> None:
        state = self._families[Family(family)]
        state.consecutive_429 = 0
        if state.factor < 1.0:
            state.factor = min(1.0, state.factor + state.recovery)
            state.kick_head()

    async def adopt_orphans(self, family: Family) -> list[OrphanLease]:
        """Always empty: a process that dies takes its leases with it."""
        return []

    async def statistics(self) -> dict[Family, FamilyStatistics]:
        now = self._clock.monotonic()
        return {family: state.statistics(now) for family, state in self._families.items()}
