"""Redis outages: the calls that wait them out (claiming and recording pause,
nothing is lost), and the user hears of them once when Redis goes, in a
reminder while it stays gone, and once when it is back."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from lumasched._clock import Clock
from lumasched.errors import ClaimStoreUnavailable
from lumasched.limits._redis_util import REDIS_DOWN, redis_retry

__all__ = ["DOWN_REMINDER", "Outage"]

T = TypeVar("T")

logger = logging.getLogger("lumasched.claims")

DOWN_REMINDER = 30.0
"""Seconds between reminders that Redis is still unreachable."""
_REDIS_RETRY = redis_retry(1.0)


class Outage:
    """Whether Redis is down, since when, and the one-line messages about it
    (``on_event``; without one they are logged as warnings)."""

    def __init__(self, clock: Clock, on_event: Callable[[str], None] | None) -> None:
        self._clock = clock
        self._on_event = on_event
        self._down_since: float | None = None
        self._noted = 0.0

    @property
    def down_for(self) -> float | None:
        """Seconds Redis has been unreachable for (None: it is reachable)."""
        return None if self._down_since is None else self._clock.monotonic() - self._down_since

    def event(self, text: str) -> None:
        if self._on_event is None:
            logger.warning("%s", text)
        else:
            logger.info("%s", text)
            self._on_event(text)

    def down(self, exc: BaseException) -> None:
        now = self._clock.monotonic()
        if self._down_since is None:
            self._down_since = self._noted = now
            self.event(
                f"Redis unreachable ({type(exc).__name__}): creates pause; generations "
                "already created keep being polled and downloaded"
            )
        elif now - self._noted >= DOWN_REMINDER:
            self._noted = now
            self.event(f"Redis unreachable for {now - self._down_since:.0f}s: creates still paused")

    def up(self) -> None:
        if self._down_since is not None:
            down = self._clock.monotonic() - self._down_since
            self._down_since = None
            self.event(f"Redis reachable again after {down:.0f}s: creates resume")

    async def guarded(self, call: Awaitable[T]) -> T:
        """``call``, with Redis outages as a ``LumaError`` (reconcile retries those)."""
        try:
            result = await call
        except REDIS_DOWN as exc:
            self.down(exc)
            raise ClaimStoreUnavailable(f"Redis unreachable: {exc}") from exc
        self.up()
        return result

    async def retrying(self, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        """``fn(...)``, called again while Redis is unreachable."""

        async def attempt() -> T:
            return await fn(*args, **kw)  # some fns (``eval``) return an awaitable

        result = await _REDIS_RETRY.call(
            attempt,
            should_retry=lambda exc: isinstance(exc, REDIS_DOWN),
            on_retry=lambda exc, _wait: self.down(exc),
            sleep=self._clock.sleep,
        )
        self.up()
        return result
