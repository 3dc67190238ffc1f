"""Account limits per model family, and the ``Limiter`` seam that enforces them.

An account's limits are per model *family*: ``video`` (ray models, and reframe
video, modify video, upscale, audio) and ``image`` (photon models, and reframe
image). Each family has a concurrency cap (generations in flight, held from the
create until the generation is terminal) and a create-request rate
(``requests`` per ``per_seconds``, enforced as a sliding window: in *any* window
of ``per_seconds`` at most ``requests`` creates leave).
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import anyio
import anyio.lowlevel
import attrs

from lumasched._clock import SYSTEM_CLOCK, Clock, SystemClock
from lumasched.errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "BUILD_TIER",
    "Family",
    "FamilyLimits",
    "FamilyStatistics",
    "InProcessLimiter",
    "Limiter",
    "Limits",
    "OrphanLease",
    "default_window_margin",
    "family_of",
    "make_limiter",
]


class Family(enum.StrEnum):
    VIDEO = "video"
    IMAGE = "image"


_IMAGE_KINDS = frozenset({"image", "reframe_image"})
_VIDEO_KINDS = frozenset({"video", "reframe_video", "modify_video", "upscale", "audio"})


def family_of(kind: str, model: str | None = None) -> Family:
    """The family a request counts against, from its kind (and model, for legacy kinds)."""
    if kind in _IMAGE_KINDS:
        return Family.IMAGE
    if kind in _VIDEO_KINDS:
        return Family.VIDEO
    if model is not None and model.startswith("photon"):
        return Family.IMAGE
    if model is not None and model.startswith("ray"):
        return Family.VIDEO
    raise ValueError(f"unknown request kind {kind!r}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class FamilyLimits:
    concurrency: int = attrs.field(validator=_positive)
    requests: int = attrs.field(validator=_positive)
    per_seconds: float = attrs.field(validator=_positive)


@attrs.frozen
class Limits:
    """Limits for both families. ``Limits()`` is the Build tier."""

    video: FamilyLimits = FamilyLimits(concurrency=10, requests=20, per_seconds=60.0)
    image: FamilyLimits = FamilyLimits(concurrency=40, requests=80, per_seconds=60.0)

    def __getitem__(self, family: Family) -> FamilyLimits:
        return self.video if family is Family.VIDEO else self.image

    @classmethod
    def tier(cls, name: str) -> Self:
        """A named tier. Only ``build`` is published; others come from a TOML file."""
        if name.lower() == "build":
            return cls()
        raise ConfigurationError(
            f"unknown tier {name!r}: the only published tier is 'build'; "
            "describe any other with a limits file (--limits FILE)"
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Self:
        """Read a limits file. Families or fields left out keep their Build-tier values.

        ::

            [video]
            concurrency = 10
            requests = 20
            per_seconds = 60
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read limits file: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "limits") -> Self:
        default = cls()
        problems: list[str] = []
        families: dict[str, FamilyLimits] = {}
        for key in data:
            if key not in ("video", "image"):
                problems.append(f"{source}: [{key}]: unknown family (expected video or image)")
        for family in Family:
            section = data.get(family.value, {})
            base = default[family]
            if not isinstance(section, dict):
                problems.append(f"{source}: {family.value}: must be a table")
                families[family.value] = base
                continue
            values: dict[str, Any] = attrs.asdict(base)
            for field, value in section.items():
                where = f"{source}: {family.value}.{field}"
                if field not in values:
                    problems.append(
                        f"{where}: unknown field (expected concurrency, requests, per_seconds)"
                    )
                    continue
                want_int = field != "per_seconds"
                ok_type = isinstance(value, int) if want_int else isinstance(value, int | float)
                if isinstance(value, bool) or not ok_type or value <= 0:
                    kind = "a positive integer" if want_int else "a positive number"
                    problems.append(f"{where}: must be {kind}, got {value!r}")
                    continue
                values[field] = float(value) if field == "per_seconds" else value
            families[family.value] = FamilyLimits(**values)
        if problems:
            raise ConfigurationError("invalid limits:\n" + "\n".join(problems))
        return cls(video=families["video"], image=families["image"])


BUILD_TIER = Limits()


@attrs.frozen
class FamilyStatistics:
    """A snapshot of one family's limiter state.

    ``held`` counts slots in use (orphans included); ``window_used`` counts
    grants inside the window the limiter enforces (``per_seconds`` plus the
    safety margin). ``effective_*`` are the limits after 429 back-off.
    ``hold_remaining`` is the pause a shared limiter imposes after it lost its
    state or saw an outage, so that earlier holders can re-register.
    """

    family: Family
    concurrency_limit: int
    effective_concurrency: int
    held: int
    waiting: int
    window_used: int
    window_limit: int
    effective_window_limit: int
    penalty_remaining: float
    rate_limited: int
    orphaned: int = 0
    granted: int = 0
    hold_remaining: float = 0.0


@attrs.frozen
class OrphanLease:
    """A lease whose holder died after its create was accepted: adopt, poll, release."""

    family: Family
    lease_id: str
    generation_id: str


class Limiter(Protocol):
    """Grants create permissions within an account's limits.

    A *lease* is one create attempt and, if it succeeds, its generation until
    that is terminal. Implementations are async context managers (a shared one
    may run heartbeats); every method is safe to call from many tasks.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def acquire(self, family: Family, lease_id: str, *, rate: bool = True) -> None:
        """Wait (FIFO) until one concurrency slot and one create-rate token are both
        free, and take them together. Idempotent on ``lease_id``. If cancelled while
        waiting, nothing is taken.

        With ``rate=False`` take only the slot, for a generation created earlier
        (e.g. by a previous run) that is to be followed to its end: no create
        will be sent, so no rate token is spent and no 429 pause applies."""
        ...

    async def release(self, family: Family, lease_id: str) -> None:
        """Give the slot back: the generation is terminal, or the create surely
        did not happen. The rate token stays spent (the server counted the
        arrival). Idempotent; unknown leases are ignored."""
        ...

    async def mark_submitted(self, family: Family, lease_id: str, generation_id: str) -> None:
        """The create was accepted: the lease now stands for a generation and
        must outlive its holder until someone polls that generation to its end."""
        ...

    async def note_rate_limited(self, family: Family, retry_after: float | None) -> None:
        """A 429 came back: hold new grants for ``retry_after`` seconds (or a
        backoff of its own) and cut the family's effective concurrency and rate;
        they recover slowly as creates succeed."""
        ...

    async def note_success(self, family: Family) -> None:
        """A create succeeded: lets a backed-off family recover."""
        ...

    async def adopt_orphans(self, family: Family) -> list[OrphanLease]:
        """Take over leases whose holder died after submitting their generation.
        The caller polls each to its end and then releases it."""
        ...

    async def statistics(self) -> dict[Family, FamilyStatistics]:
        """A snapshot per family."""
        ...


# --- shared semantics -------------------------------------------------------------

DECREASE_FACTOR = 0.5
"""A 429 multiplies a family's effective concurrency and rate by this."""
DEFAULT_MIN_FACTOR = 0.1
"""Back-off never goes below this fraction of the configured limits (nor below 1)."""
MAX_WINDOW_MARGIN = 2.0


def default_window_margin(per_seconds: float) -> float:
    """The safety margin added to the rate window: 3% of it, between 20 ms and 2 s.

    The server counts *arrivals*; two grants exactly one window apart can arrive
    closer together if the first was delayed more on its way. Widening the
    window by more than that jitter keeps every true window within the limit.
    """
    return min(MAX_WINDOW_MARGIN, max(0.02, per_seconds * 0.03))


def recovery_step(limits: FamilyLimits) -> float:
    """Additive recovery per successful create: back from half the limits in
    ``requests`` successes (about two windows at the reduced rate)."""
    return 1.0 / (2 * limits.requests)


def backoff_pause(limits: FamilyLimits, consecutive: int) -> float:
    """Our own pause after a 429 without ``Retry-After``: a twentieth of the
    window, doubling per consecutive 429, at most one window."""
    base = max(0.05, limits.per_seconds / 20)
    return float(min(limits.per_seconds, base * 2 ** max(0, consecutive - 1)))


def max_penalty(limits: FamilyLimits) -> float:
    """A ``Retry-After`` longer than this is treated as this (a sanity cap)."""
    return max(120.0, 2 * limits.per_seconds)


def scaled(limit: int, factor: float) -> int:
    return max(1, math.floor(limit * factor + 1e-9))


# --- in-process limiter -------------------------------------------------------------


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
        self.log: deque[float] = deque()
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
        horizon = now - self.window
        while self.log and self.log[0] <= horizon:
            self.log.popleft()

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
            return max(1e-3, self.log[over] + self.window - now)
        return 0.0

    def grant(self, lease_id: str, now: float, *, rate: bool = True) -> None:
        self.held[lease_id] = None
        if rate:
            self.log.append(now)
            self.granted += 1

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
    grants. A slot and a rate token are taken together, waiters are served
    strictly first come, first served, and a waiter cancelled while waiting
    takes nothing. A 429 (``note_rate_limited``) pauses the family and halves
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
        elif isinstance(self._clock, SystemClock):
            with anyio.move_on_after(delay):
                await waiter.wake.wait()
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._timer, delay, tg.cancel_scope)
                await waiter.wake.wait()
                tg.cancel_scope.cancel()

    async def _timer(self, delay: float, scope: anyio.CancelScope) -> None:
        await self._clock.sleep(delay)
        scope.cancel()

    async def release(self, family: Family, lease_id: str) -> None:
        state = self._families[Family(family)]
        if state.held.pop(lease_id, _MISSING) is not _MISSING:
            state.kick_head()

    async def mark_submitted(self, family: Family, lease_id: str, generation_id: str) -> None:
        state = self._families[Family(family)]
        if lease_id in state.held:
            state.held[lease_id] = generation_id

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


_MISSING = object()


def make_limiter(
    limits: Limits = BUILD_TIER,
    *,
    redis_url: str | Redis | None = None,
    api_key: str | None = None,
    **kwargs: Any,
) -> Limiter:
    """An ``InProcessLimiter``, or a ``RedisLimiter`` when a Redis URL (or client)
    is given so that every process using the same API key shares the limits.
    ``kwargs`` go to the chosen constructor."""
    if redis_url is None:
        return InProcessLimiter(limits, **kwargs)
    from lumasched.limits.redis import RedisLimiter

    return RedisLimiter(redis_url, limits, api_key=api_key, **kwargs)
