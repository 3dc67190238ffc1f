"""``RedisLimiter``: one API key's limits shared by every process that uses it.

Each operation is one Lua script on Redis time (see ``lumasched.limits._redis_scripts``):
an acquire takes a concurrency slot and a create-rate token together or not at
all, idempotent on the caller's lease id; leases live while their holder's
heartbeat renews them; a lease whose generation was submitted outlives a dead
holder (an *orphan*) until another worker adopts it; a 429 pauses every worker
of the family and cuts a shared back-off factor; waiters are served first come,
first served, woken by pub/sub as a hint and by polling as the truth.

When Redis loses its state (restart without persistence, FLUSH, eviction) or
leases ran out while nothing reached it for longer than a lease TTL (an outage,
a clock jump), the state gets a new *epoch*: new grants are held for 1.5
heartbeats while every live worker re-registers its leases and its grants of
the last window (so the sliding log is whole again). A brand-new state, and
leases left by workers silent for longer than ``orphan_max``, cost no hold.
While Redis is down, ``acquire`` waits (creates pause) and nothing raises;
releases and generation ids are retried by the heartbeat.

::

    async with RedisLimiter("redis://localhost:6379/0", limits, api_key=key) as limiter:
        await limiter.acquire(Family.VIDEO, lease_id)
        ...
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, Self

import anyio
import attrs
import redis.asyncio as aioredis

from lumasched._background import Supervisor, Tolerance
from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched.api._taxonomy import Family
from lumasched.limits import _redis_scripts as lua
from lumasched.limits._base import (
    BUILD_TIER,
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
from lumasched.limits._redis_state import (  # read from outside; importable from here
    FamilyState,
    LeaseInfo,
    bootstrap_state,
    family_prefix,
    inspect_state,
    list_accounts,
)
from lumasched.limits._redis_util import (  # account_id, REDIS_DOWN...: still importable from here
    DEFAULT_SOCKET_TIMEOUT,
    REDIS_DOWN,
    account_id,
    as_text,
    connect,
    pairs,
    redis_retry,
    uncancellable,
)

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SOCKET_TIMEOUT",
    "REDIS_DOWN",
    "FamilyState",
    "LeaseInfo",
    "RedisLimiter",
    "account_id",
    "bootstrap_state",
    "family_prefix",
    "inspect_state",
    "list_accounts",
]

logger = logging.getLogger("lumasched.limits")

DEFAULT_NAMESPACE = "lumasched"
DEFAULT_LEASE_TTL = 30.0
DEFAULT_POLL_MAX = 1.0
DEFAULT_ORPHAN_MAX = 1800.0


@attrs.define(eq=False)
class _Waiter:
    wake: anyio.Event = attrs.field(factory=anyio.Event)
    rank: int = 1 << 30
    """Place in the shared queue at the last attempt: nudges wake the lowest first."""


@attrs.frozen
class _FamilyConfig:
    limits: FamilyLimits
    keys: list[str]
    channel: str
    window_ms: int
    hold_ms: int

    def head(
        self, lease_ttl_ms: int, waiter_ttl_ms: int, orphan_max_ms: int, epoch: str | None
    ) -> list[Any]:
        return [
            lease_ttl_ms,
            lease_ttl_ms,
            self.hold_ms,
            waiter_ttl_ms,
            orphan_max_ms,
            self.channel,
            epoch or "",
        ]


class RedisLimiter:
    """The ``Limiter`` for many processes and hosts sharing one API key.

    ``url_or_client``: a ``redis://`` / ``rediss://`` / ``unix://`` URL, or a
    ``redis.asyncio.Redis`` you own (then set its ``socket_timeout``: limiter
    calls are never cancelled mid-command, they wait for the timeout).
    ``api_key`` only names the account (hashed). ``lease_ttl``: how long a
    dead holder's unsubmitted slot stays taken; ``heartbeat`` defaults to a
    third of it. ``poll_max`` bounds a waiter's sleep between attempts.
    ``orphan_max`` bounds how long a dead holder's submitted generation can
    count when no worker adopts it. ``hold`` overrides the pause after lost
    state or an outage (default: 1.5 heartbeats). ``owner`` names this worker
    in ``lumasched limits``.

    Must be used as an async context manager (it runs the heartbeat and the
    wake-up subscriber); asyncio only (redis-py).
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        limits: Limits = BUILD_TIER,
        *,
        api_key: str | None,
        namespace: str = DEFAULT_NAMESPACE,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        heartbeat: float | None = None,
        window_margin: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        poll_max: float = DEFAULT_POLL_MAX,
        orphan_max: float = DEFAULT_ORPHAN_MAX,
        hold: float | None = None,
        min_factor: float = DEFAULT_MIN_FACTOR,
        recovery: float | None = None,
        owner: str | None = None,
    ) -> None:
        if lease_ttl <= 0 or poll_max <= 0 or orphan_max <= 0:
            raise ValueError("lease_ttl, poll_max and orphan_max must be > 0")
        self.limits = limits
        self.namespace = namespace
        self.account = account_id(api_key)
        self.lease_ttl = lease_ttl
        self.heartbeat = lease_ttl / 3 if heartbeat is None else heartbeat
        self.poll_max = poll_max
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._clock = clock
        self._min_factor = min_factor
        self._recovery = recovery
        self._client, self._own_client = connect(url_or_client)
        self._lease_ttl_ms = round(lease_ttl * 1000)
        self._waiter_ttl_ms = round((4 * poll_max + 0.5) * 1000)
        self._orphan_max_ms = round(orphan_max * 1000)
        self._families: dict[Family, _FamilyConfig] = {}
        for family in Family:
            fl = limits[family]
            window = fl.per_seconds + (
                default_window_margin(fl.per_seconds) if window_margin is None else window_margin
            )
            prefix = family_prefix(namespace, self.account, family)
            self._families[family] = _FamilyConfig(
                limits=fl,
                keys=[f"{prefix}:{name}" for name in lua.KEY_NAMES],
                channel=f"{prefix}:freed",
                window_ms=round(window * 1000),
                hold_ms=round((1.5 * self.heartbeat if hold is None else hold) * 1000),
            )
        self._scripts = {
            name: self._client.register_script(getattr(lua, name))
            for name in ("ACQUIRE", "RELEASE", "RENEW", "ABANDON", "ADOPT", "PENALTY", "SUCCESS")
        }
        self._held: dict[tuple[Family, str], str | None] = {}
        self._recent: dict[Family, deque[tuple[str, float]]] = {f: deque() for f in Family}
        """Grants of the last window (ticket, local time): re-registered if Redis loses them."""
        self._epoch: dict[Family, str | None] = dict.fromkeys(Family)
        self._unreleased: set[tuple[Family, str]] = set()
        self._waiters: dict[Family, list[_Waiter]] = {family: [] for family in Family}
        self._factor: dict[Family, float] = dict.fromkeys(Family, 1.0)
        self._noted_429: set[Family] = set()
        self._background = Supervisor("lumasched-limits-background", logger)
        self._heartbeat_trouble = Tolerance("limiter heartbeat", lease_ttl, clock, logger)
        """A heartbeat failing past the lease TTL has lost every lease: it stops, loudly."""
        self._wakeup_trouble = Tolerance("limiter wake-up subscriber", lease_ttl, clock, logger)
        self._redis_down = False
        self.round_trips = 0
        """Limiter calls sent to Redis so far (scripts, not the subscriber)."""
        self.reregistered = 0
        """Leases this worker had to re-register (Redis lost them, or we were late)."""

    def __repr__(self) -> str:
        return (
            f"RedisLimiter(namespace={self.namespace!r}, account={self.account!r}, "
            f"owner={self.owner!r})"
        )

    # --- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._background.started:
            raise RuntimeError("a RedisLimiter cannot be entered twice")
        # Supervised (lumasched._background): a loop that fails stops the limiter,
        # and its error is raised by the next acquire and by __aexit__.
        self._background.start(self._heartbeat_loop, self._wakeup_loop)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            try:
                with anyio.move_on_after(DEFAULT_SOCKET_TIMEOUT):
                    await self._hand_over()
            finally:
                try:
                    await self._background.aclose()
                finally:
                    if self._own_client:
                        await self._client.aclose()

    async def _hand_over(self) -> None:
        """On a clean exit, submitted leases become orphans at once so another
        worker adopts them without waiting for the TTL; unsubmitted ones are
        left to expire (their create may still be on its way)."""
        for family in Family:
            ids = [lid for (fam, lid), gen in self._held.items() if fam is family and gen]
            if ids:
                try:
                    await self._call("ABANDON", family, ids)
                except REDIS_DOWN:
                    logger.warning("Redis unreachable at exit: %d leases left to expire", len(ids))
        self._held.clear()

    async def bootstrap(self) -> bool:
        """Create this account's limiter state if it does not exist yet (returns
        True then). Optional: the first call of a worker that has seen no state
        before does the same. Tests use it to start from a known epoch."""
        return await bootstrap_state(self._client, self.namespace, self.account)

    # --- the Limiter protocol ------------------------------------------------------

    async def acquire(self, family: Family, lease_id: str, *, rate: bool = True) -> None:
        family = Family(family)
        if (family, lease_id) in self._held:
            return
        self._background.check()
        config = self._families[family]
        ticket = uuid.uuid4().hex
        waiter = _Waiter()
        self._waiters[family].append(waiter)
        outage = redis_retry(self.poll_max)
        down = 0
        try:
            # Not a retry loop: waiting for a slot (woken by a nudge, or polling);
            # only a Redis outage inside it takes the one back-off's waits.
            while True:
                delay: float
                waiter.wake = anyio.Event()  # before the call: a nudge during it counts
                try:
                    result = await self._call(
                        "ACQUIRE",
                        family,
                        [
                            ticket,
                            lease_id,
                            self.owner,
                            config.limits.concurrency,
                            config.limits.requests,
                            config.window_ms,
                            1 if rate else 0,
                        ],
                    )
                except REDIS_DOWN as exc:
                    self._note_down(exc)
                    down += 1
                    delay = outage.backoff(down)
                else:
                    self._note_up()
                    granted, hint, reason = int(result[0]), int(result[1]), as_text(result[2])
                    self._factor[family] = float(as_text(result[3]))
                    self._note_event(family, as_text(result[4]))
                    if granted:
                        self._held[family, lease_id] = None
                        if as_text(result[2]) == "ok":
                            self._recent[family].append((ticket, self._clock.monotonic()))
                    if self._epoch_changed(family, as_text(result[6])):
                        try:
                            await self._reregister(family)
                        except REDIS_DOWN as exc:
                            self._note_down(exc)  # the heartbeat tries again
                    if granted:
                        return
                    self._background.check()  # a waiter must not outlive the heartbeat
                    waiter.rank = int(result[5])
                    if reason == "hold":
                        logger.info("%s: new grants held %.1fs", family.value, hint / 1000)
                    if hint >= 0 and reason != "full":
                        delay = min(self.poll_max, hint / 1000 + random.uniform(0.001, 0.01))
                    else:
                        delay = self.poll_max * random.uniform(0.5, 1.0)
                with anyio.move_on_after(delay):
                    await waiter.wake.wait()
        except BaseException:
            # The outcome of the last call may be unknown: whatever it took
            # (a slot, a queue ticket) is given back; both calls are idempotent.
            with anyio.CancelScope(shield=True):
                await self._release_remote(family, lease_id, ticket)
            raise
        finally:
            self._waiters[family].remove(waiter)

    async def release(self, family: Family, lease_id: str) -> None:
        family = Family(family)
        self._held.pop((family, lease_id), None)
        with anyio.CancelScope(shield=True):
            await self._release_remote(family, lease_id, "")

    async def _release_remote(self, family: Family, lease_id: str, ticket: str) -> None:
        try:
            await self._call("RELEASE", family, [lease_id, ticket])
        except REDIS_DOWN as exc:
            self._note_down(exc)
            self._unreleased.add((family, lease_id))
        else:
            self._unreleased.discard((family, lease_id))

    async def mark_submitted(self, family: Family, lease_id: str, generation_id: str) -> None:
        family = Family(family)
        if (family, lease_id) not in self._held:
            return
        self._held[family, lease_id] = generation_id
        with anyio.CancelScope(shield=True):
            try:
                await self._renew(family, [(lease_id, generation_id)])
            except REDIS_DOWN as exc:
                self._note_down(exc)  # the heartbeat carries the generation id later

    async def note_rate_limited(self, family: Family, retry_after: float | None) -> None:
        family = Family(family)
        fl = self._families[family].limits
        pause_ms = -1 if retry_after is None or retry_after < 0 else round(retry_after * 1000)
        self._noted_429.add(family)
        try:
            result = await self._call(
                "PENALTY",
                family,
                [
                    pause_ms,
                    round(backoff_pause(fl, 1) * 1000),
                    round(fl.per_seconds * 1000),
                    round(max_penalty(fl) * 1000),
                    self._min_factor,
                    fl.concurrency,
                    fl.requests,
                    self._families[family].window_ms,
                ],
            )
        except REDIS_DOWN as exc:
            self._note_down(exc)
            return
        self._factor[family] = float(as_text(result[1]))
        logger.info(
            "%s: 429, every worker pauses %.1fs; limits now x%.2f",
            family.value,
            int(result[0]) / 1000,
            self._factor[family],
        )

    async def note_success(self, family: Family) -> None:
        family = Family(family)
        if self._factor[family] >= 1.0 and family not in self._noted_429:
            return  # nothing to recover: save the round trip
        step = recovery_step(self._families[family].limits)
        try:
            result = await self._call(
                "SUCCESS", family, [step if self._recovery is None else self._recovery]
            )
        except REDIS_DOWN as exc:
            self._note_down(exc)
            return
        self._noted_429.discard(family)
        self._factor[family] = float(as_text(result))

    async def adopt_orphans(self, family: Family, *, limit: int = 100) -> list[OrphanLease]:
        family = Family(family)
        try:
            flat = await self._call("ADOPT", family, [self.owner, limit])
        except REDIS_DOWN as exc:
            self._note_down(exc)
            return []
        adopted = []
        for lease_id, gen in pairs(flat).items():
            self._held[family, lease_id] = gen or None
            if gen:
                adopted.append(OrphanLease(family=family, lease_id=lease_id, generation_id=gen))
        if adopted:
            logger.info("%s: adopted %d orphaned generation(s)", family.value, len(adopted))
        return adopted

    async def statistics(self) -> dict[Family, FamilyStatistics]:
        out = {}
        for family, config in self._families.items():
            state = await inspect_state(
                self._client,
                self.namespace,
                self.account,
                family,
                window=config.window_ms / 1000,
            )
            fl = config.limits
            out[family] = FamilyStatistics(
                family=family,
                concurrency_limit=fl.concurrency,
                effective_concurrency=scaled(fl.concurrency, state.factor),
                held=state.held,
                waiting=state.waiting,
                window_used=state.window_used,
                window_limit=fl.requests,
                effective_window_limit=scaled(fl.requests, state.factor),
                penalty_remaining=state.penalty_remaining,
                rate_limited=state.counters.get("rate_limited", 0),
                orphaned=sum(1 for lease in state.leases if lease.orphaned_for is not None),
                granted=state.counters.get("granted", 0),
                hold_remaining=state.hold_remaining,
            )
        return out

    # --- internals ------------------------------------------------------------------

    async def _call(self, name: str, family: Family, args: Sequence[Any]) -> Any:
        config = self._families[family]
        head = config.head(
            self._lease_ttl_ms, self._waiter_ttl_ms, self._orphan_max_ms, self._epoch[family]
        )
        self.round_trips += 1
        return await uncancellable(self._scripts[name](keys=config.keys, args=[*head, *args]))

    def _epoch_changed(self, family: Family, epoch: str) -> bool:
        """Note the state's epoch; True when it changed since we last saw it (the
        state was lost, or nothing reached Redis for a while)."""
        known, self._epoch[family] = self._epoch[family], epoch
        return known is not None and known != epoch

    def _recent_grants(self, family: Family) -> list[tuple[str, int]]:
        window = self._families[family].window_ms / 1000
        recent, now = self._recent[family], self._clock.monotonic()
        while recent and recent[0][1] <= now - window:
            recent.popleft()
        return [(ticket, round((now - at) * 1000)) for ticket, at in recent]

    def _leases_of(self, family: Family) -> list[tuple[str, str]]:
        return [(lid, gen or "") for (fam, lid), gen in self._held.items() if fam is family]

    async def _reregister(self, family: Family) -> None:
        grants = self._recent_grants(family)
        leases = self._leases_of(family)
        logger.warning(
            "%s: limiter state in Redis was lost or interrupted; re-registering "
            "%d lease(s) and %d grant(s) of the last window",
            family.value,
            len(leases),
            len(grants),
        )
        await self._renew(family, leases, grants)

    async def _renew(
        self,
        family: Family,
        leases: list[tuple[str, str]],
        grants: list[tuple[str, int]] | None = None,
    ) -> None:
        flat: list[Any] = [item for pair in leases for item in pair]
        flat += [item for pair in grants or () for item in pair]
        window_ms = self._families[family].window_ms
        result = await self._call("RENEW", family, [self.owner, window_ms, len(leases), *flat])
        self._note_event(family, as_text(result[1]))
        if self._epoch_changed(family, as_text(result[2])) and grants is None:
            await self._reregister(family)
        for (lease_id, _), status in zip(leases, result[0], strict=True):
            if int(status) != 1:
                self.reregistered += 1
                logger.warning(
                    "%s: lease %s was %s; re-registered (the family may briefly be over its cap)",
                    family.value,
                    lease_id,
                    "lost by Redis" if int(status) == 2 else "orphaned (heartbeat late)",
                )

    async def _beat(self) -> None:
        for family, lease_id in list(self._unreleased):
            await self._release_remote(family, lease_id, "")
        for family in Family:
            leases = self._leases_of(family)
            if not leases and not self._recent_grants(family):
                continue
            await self._renew(family, leases)
            # a lease released while the renew was on its way must not stay renewed
            for lease_id, _ in leases:
                if (family, lease_id) not in self._held:
                    await self._release_remote(family, lease_id, "")

    async def _heartbeat_loop(self) -> None:
        # Not a retry loop: a beat every ``heartbeat`` for the limiter's life. While
        # Redis is down, the beat is retried on the one back-off (capped at a second,
        # as the claims' calls are), so leases are renewed soon after it is back.
        outage = redis_retry(min(1.0, self.heartbeat))
        down = 0
        while True:
            try:
                await self._beat()
            except REDIS_DOWN as exc:
                self._note_down(exc)
                down += 1
                await self._clock.sleep(outage.backoff(down))
                continue
            except Exception as exc:  # e.g. Redis out of memory, a script error
                self._heartbeat_trouble.failed(exc)
            else:
                self._heartbeat_trouble.ok()
            down = 0
            self._note_up()
            await self._clock.sleep(self.heartbeat * random.uniform(0.9, 1.0))

    async def _wakeup_loop(self) -> None:
        channels = {config.channel: family for family, config in self._families.items()}
        # Not a retry loop: a subscription kept for the limiter's life. When it drops
        # it is re-opened on the one back-off, reset once subscribed again (waiters
        # poll meanwhile: nothing waits on it).
        outage = redis_retry(1.0)
        drops = 0
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                drops = 0
                self._wake_all()  # nudges may have been missed while unsubscribed
                async for message in pubsub.listen():
                    family = channels.get(as_text(message.get("channel", "")))
                    if family is not None:
                        self._wake(family, int(as_text(message.get("data", "1"))))
            except REDIS_DOWN:
                pass
            except Exception as exc:  # waiters poll anyway: a nudge lost is only slower
                self._wakeup_trouble.failed(exc)
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()
            drops += 1
            await self._clock.sleep(outage.backoff(drops))

    def _wake(self, family: Family, count: int) -> None:
        for waiter in sorted(self._waiters[family], key=lambda w: w.rank)[: max(1, count)]:
            waiter.wake.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake.set()

    def _note_event(self, family: Family, event: str) -> None:
        if event == "lost":
            logger.warning(
                "%s: Redis lost the limiter state (restart, flush or eviction); "
                "holding new grants while holders re-register",
                family.value,
            )
        elif event == "gap":
            logger.warning(
                "%s: no limiter activity reached Redis for over a lease TTL "
                "(outage or clock jump); holding new grants",
                family.value,
            )
        elif event == "stale":
            logger.info(
                "%s: leases left by workers silent for over orphan_max were dropped",
                family.value,
            )

    def _note_down(self, exc: BaseException) -> None:
        if not self._redis_down:
            self._redis_down = True
            logger.warning(
                "Redis unreachable (%s): creates pause until it is back", type(exc).__name__
            )

    def _note_up(self) -> None:
        if self._redis_down:
            self._redis_down = False
            logger.info("Redis reachable again")
