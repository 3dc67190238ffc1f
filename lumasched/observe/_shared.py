"""``SharedLimitsMetrics``: the limits every host shares through Redis (what
``lumasched limits --redis URL --json`` shows), as metrics from any one process.

It reads Redis when refreshed (exporters refresh at scrape time), so one
process, any process, can serve the whole account's picture: slots held,
creates in the window, waiters, back-off, pauses, orphans. The account label
is the account id (a hash of the key, never the key).
"""

from __future__ import annotations

from typing import Any, Self

import redis.asyncio as aioredis

from lumasched.api import Family
from lumasched.limits._redis_util import connect
from lumasched.limits.redis import DEFAULT_NAMESPACE, FamilyState, inspect_state, list_accounts
from lumasched.observe._model import Kind, Labels, Metric, Sample
from lumasched.observe._scheduler import MetricsSource

__all__ = ["SharedLimitsMetrics"]

_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("lumasched_shared_concurrency_in_use", "held", "Slots held across all hosts."),
    ("lumasched_shared_concurrency_limit", "concurrency_limit", "The account's concurrency cap."),
    ("lumasched_shared_window_creates", "window_used", "Creates granted in the current window."),
    ("lumasched_shared_window_limit", "requests", "Creates allowed per window."),
    ("lumasched_shared_limiter_waiting", "waiting", "Creates waiting, all hosts."),
    ("lumasched_shared_backoff_factor", "factor", "Back-off factor after 429s (1 = none)."),
    (
        "lumasched_shared_rate_limit_pause_seconds",
        "penalty_remaining",
        "Seconds left of the pause after a 429.",
    ),
    (
        "lumasched_shared_hold_seconds",
        "hold_remaining",
        "Seconds new grants stay held after lost state or an outage.",
    ),
    ("lumasched_shared_orphaned_leases", "orphans", "Slots whose holder died, awaiting adoption."),
)


def _value(state: FamilyState, field: str) -> float | None:
    if field == "orphans":
        return sum(1 for lease in state.leases if lease.orphaned_for is not None)
    value = getattr(state, field)
    return None if value is None else float(value)


class SharedLimitsMetrics(MetricsSource):
    """The shared-limit state in Redis, read at each ``refresh()``.

    ``accounts`` narrows it to some account ids (``lumasched.limits.redis.account_id``);
    by default every account under ``namespace`` is shown. Give a URL (the
    connection is closed by ``aclose``/``async with``) or a client you own.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        accounts: list[str] | None = None,
    ) -> None:
        self._client, self._owned = connect(redis)
        self.namespace = namespace
        self.accounts = accounts
        self._states: dict[str, list[FamilyState]] = {}
        self.up = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def refresh(self) -> None:
        try:
            accounts = self.accounts or await list_accounts(self._client, self.namespace)
            self._states = {
                account: [
                    await inspect_state(self._client, self.namespace, account, family)
                    for family in Family
                ]
                for account in accounts
            }
        except Exception:
            self.up = False
            raise
        self.up = True

    def collect(self) -> list[Metric]:
        out = [
            Metric(
                "lumasched_shared_redis_up",
                Kind.GAUGE,
                "1 if the last read of the shared state in Redis succeeded.",
                (Sample((), 1.0 if self.up else 0.0),),
            )
        ]
        for name, field, help in _GAUGES:
            samples = []
            for account, states in sorted(self._states.items()):
                for state in states:
                    value = _value(state, field)
                    if value is not None:
                        labels: Labels = (("account", account), ("family", state.family.value))
                        samples.append(Sample(labels, value))
            out.append(Metric(name, Kind.GAUGE, help, tuple(samples)))
        events: list[Sample] = []
        for account, states in sorted(self._states.items()):
            for state in states:
                for key, n in sorted(state.counters.items()):
                    event_labels: Labels = (
                        ("account", account),
                        ("family", state.family.value),
                        ("event", key.removesuffix("_count")),
                    )
                    events.append(Sample(event_labels, float(n)))
        out.append(
            Metric(
                "lumasched_shared_limiter_events_total",
                Kind.COUNTER,
                "The shared limiter's own counters (expired, adopted, lost, ... leases).",
                tuple(events),
            )
        )
        return out
