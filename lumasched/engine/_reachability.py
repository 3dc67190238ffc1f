"""Whether the API can be reached, as creates and status checks find it.

A connect error (refused, DNS, TLS, connect timeout) proves the request never
left, so it is nobody's failure: the job goes back to the queue. But while
the API cannot be reached, creating one job after another would only spin, so
the dispatchers wait for the next probe time (backing off 1, 2, 4 ... 15 s),
and any answer from the server, to a create or a status check, ends the
outage. Once the API has been unreachable for ``give_up`` seconds the
scheduler stops creating (``APIUnreachableError``); the jobs not created stay
pending for the next run.
"""

from __future__ import annotations

import time

import attrs

from lumasched._clock import Clock
from lumasched._config import DEFAULT_UNREACHABLE_GIVE_UP
from lumasched.api._retry import RetryPolicy

__all__ = ["DEFAULT_UNREACHABLE_GIVE_UP", "Outage", "Reachability"]

_MAX_BACKOFF = 15.0
_PROBES = RetryPolicy(initial=1.0, max=_MAX_BACKOFF, jitter=0.0)
"""Rounds of create probes during an outage: 1, 2, 4, 8, 15, 15... seconds apart."""


@attrs.frozen
class Outage:
    """The API has not been reachable since ``since`` (UNIX time)."""

    url: str
    since: float
    error: str
    """The last connect error."""
    gives_up_at: float
    """UNIX time at which creating stops if it is still unreachable."""


class Reachability:
    """Tracks an outage of the API at ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, give_up: float, clock: Clock) -> None:
        self.url = url
        self.give_up = give_up
        self._clock = clock
        self._since: float | None = None
        """monotonic time of the first failure of the current outage"""
        self._since_wall = 0.0
        self._error = ""
        self._next_try = 0.0
        self._round = 0

    def failed(self, error: BaseException) -> None:
        """A request could not connect."""
        now = self._clock.monotonic()
        self._error = str(error)
        if self._since is None:
            self._since = now
            self._since_wall = time.time()
            self._round = 0
        if now >= self._next_try:
            # a new round of probes (failures of creates sent together count once)
            self._round += 1
            self._next_try = now + _PROBES.backoff(self._round)

    def answered(self) -> None:
        """The server answered something: it is reachable."""
        self._since = None
        self._next_try = 0.0

    def down_for(self) -> float:
        """Seconds (on the injected clock) the current outage has lasted; 0 if none."""
        return 0.0 if self._since is None else self._clock.monotonic() - self._since

    @property
    def expired(self) -> bool:
        """Unreachable for ``give_up`` seconds or more."""
        return self._since is not None and self._clock.monotonic() - self._since >= self.give_up

    def outage(self) -> Outage | None:
        """The current outage, or None while the API answers."""
        if self._since is None:
            return None
        return Outage(self.url, self._since_wall, self._error, self._since_wall + self.give_up)

    async def wait(self) -> None:
        """Until the next probe may be sent (at once when there is no outage)."""
        while self._since is not None:
            delay = self._next_try - self._clock.monotonic()
            if delay <= 0:
                return
            # short naps: an answer to anything else ends the wait early
            await self._clock.sleep(min(delay, 0.5))
