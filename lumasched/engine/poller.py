"""The single poll loop: one task watches every in-flight generation.

Each watched generation has a *next-check time* in one heap. The first check is
planned for when the generation should be done, from a ``LatencyEstimator``
that learns time-to-terminal per ``(model, resolution, duration)``; a check that
finds it still running backs off geometrically (capped), so a late generation is
noticed within a small fraction of its latency. When several generations are due
together, one ``list`` call (newest first) answers for all of them, and for every
other watched generation on that page, for free; ids not on the page fall back to
``get``. Callbacks are *hints*: they pull a check forward, and the API's answer,
never the callback's body, decides.

Requests per job stay near one: a warm estimator checks once at the expected
time, batches share a ``list`` call, and only late generations cost more.
Errors (transport, 5xx, 429) never stop the loop; the checks are retried later,
by this loop alone: a ``LumaClient``'s status reads made here are one attempt each
(``retry=False``), so one failed read costs one request, not the client's retries
and then the loop's.

Example::

    poller = Poller(client)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        poller.watch(generation.id, key=latency_key_for(request), on_update=handle)
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import attrs

from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched.api._client import LumaClient
from lumasched.api._retry import RetryPolicy
from lumasched.errors import GenerationTimeout, LumaError, NotFoundError, RateLimitError

if TYPE_CHECKING:
    from lumasched.api import Generation, GenerationPage

__all__ = [
    "DEFAULT_PRIORS",
    "LatencyEstimator",
    "LatencyKey",
    "Poller",
    "PollerStats",
    "latency_key_for",
]

logger = logging.getLogger(__name__)

LatencyKey = tuple[str | None, str | None, str | None]
"""``(model, resolution, duration)``; ``model`` is the request kind for upscale/audio."""


class _StatusClient(Protocol):
    async def get(self, generation_id: str, /) -> Generation: ...
    async def list(self, limit: int = ..., offset: int = ...) -> GenerationPage: ...


_K = TypeVar("_K")

OnUpdate = Callable[["Generation"], Awaitable[None]]
OnError = Callable[[BaseException], Awaitable[None]]


def latency_key_for(request: object) -> LatencyKey:
    """The estimator key of a request: its model (or kind), resolution and duration."""
    model = getattr(request, "model", None) or getattr(request, "kind", None)
    resolution = getattr(request, "resolution", None)
    duration = getattr(request, "duration", None)
    return (
        None if model is None else str(model),
        None if resolution is None else str(resolution),
        None if duration is None else str(duration),
    )


# Rough time-to-completed on the real service, in seconds. They only seed the
# estimator; the first observations replace them.
DEFAULT_PRIORS: Mapping[str, float] = {
    "ray-2": 60.0,
    "ray-1-6": 60.0,
    "ray-flash-2": 25.0,
    "photon-1": 15.0,
    "photon-flash-1": 8.0,
    "upscale": 40.0,
    "audio": 20.0,
}
_DEFAULT_PRIOR = 30.0
_DOCUMENTED = frozenset({"queued", "dreaming", "completed", "failed"})
_RESOLUTION_FACTOR = {"540p": 0.75, "720p": 1.0, "1080p": 2.0, "4k": 4.0}
_DURATION_FACTOR = {"5s": 1.0, "9s": 1.8, "10s": 2.0}


@attrs.define
class _Ewma:
    value: float
    count: int = 1

    def add(self, x: float, alpha: float) -> None:
        self.value += alpha * (x - self.value)
        self.count += 1


class LatencyEstimator:
    """Online estimate of the time from create to a terminal state, per ``LatencyKey``.

    An exponentially weighted mean per key. A key never seen borrows from its model
    (the model's ratio to the priors), then from every observation so far (one
    global ratio: an emulator at 1/100 speed is learnt after one job), then from
    the per-model priors.
    """

    def __init__(self, *, alpha: float = 0.3, priors: Mapping[str, float] | None = None) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self._alpha = alpha
        self._priors = dict(DEFAULT_PRIORS if priors is None else priors)
        self._keys: dict[LatencyKey, _Ewma] = {}
        self._models: dict[str | None, _Ewma] = {}
        self._global: _Ewma | None = None

    def prior(self, key: LatencyKey) -> float:
        model, resolution, duration = key
        base = self._priors.get(model or "", _DEFAULT_PRIOR)
        return (
            base
            * _RESOLUTION_FACTOR.get(resolution or "", 1.0)
            * _DURATION_FACTOR.get(duration or "", 1.0)
        )

    def observe(self, key: LatencyKey, seconds: float) -> None:
        """Record that a generation of ``key`` took ``seconds`` to finish."""
        if not (math.isfinite(seconds) and seconds > 0):
            return
        log_ratio = math.log(seconds / self.prior(key))
        self._add(self._keys, key, seconds)
        self._add(self._models, key[0], log_ratio)
        if self._global is None:
            self._global = _Ewma(log_ratio)
        else:
            self._global.add(log_ratio, self._alpha)

    def _add(self, table: dict[_K, _Ewma], key: _K, x: float) -> None:
        entry = table.get(key)
        if entry is None:
            table[key] = _Ewma(x)
        else:
            entry.add(x, self._alpha)

    def expected(self, key: LatencyKey) -> float:
        """Expected seconds from create to terminal for ``key``."""
        entry = self._keys.get(key)
        if entry is not None:
            return entry.value
        ratio = self._models.get(key[0]) or self._global
        scale = 1.0 if ratio is None else math.exp(ratio.value)
        return self.prior(key) * scale

    def samples(self, key: LatencyKey | None = None) -> int:
        """Observations for ``key``, or in all (``None``)."""
        if key is None:
            return 0 if self._global is None else self._global.count
        entry = self._keys.get(key)
        return 0 if entry is None else entry.count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot, so a later run starts warm (see ``from_dict``)."""
        return {
            "keys": [[list(k), e.value, e.count] for k, e in self._keys.items()],
            "models": [[m, e.value, e.count] for m, e in self._models.items()],
            "global": None if self._global is None else [self._global.value, self._global.count],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> LatencyEstimator:
        est = cls(**kwargs)
        for k, value, count in data.get("keys", []):
            a, b, c = k
            est._keys[(a, b, c)] = _Ewma(float(value), int(count))
        for m, value, count in data.get("models", []):
            est._models[m] = _Ewma(float(value), int(count))
        if data.get("global") is not None:
            value, count = data["global"]
            est._global = _Ewma(float(value), int(count))
        return est


@attrs.frozen
class PollerStats:
    """A snapshot of the poll loop's counters."""

    gets: int = 0
    """``get`` calls made (including failed ones)."""
    lists: int = 0
    """``list`` calls made (one per page)."""
    hints: int = 0
    """Hints accepted for watched generations."""
    hints_ignored: int = 0
    """Hints for ids not watched (stale or forged), or past ``max_hints`` for one id."""
    errors: int = 0
    """Status requests that failed (they are retried later)."""
    found_in_list: int = 0
    """Watched generations whose status a ``list`` page answered."""
    missed_in_list: int = 0
    """Due generations a ``list`` did not find (then checked with ``get``)."""
    early: int = 0
    """Terminal states noticed, for free, on a list page before their check was due."""
    finished: int = 0
    """Generations seen terminal (and forgotten)."""
    gone: int = 0
    """Generations given up on after repeated 404s (``on_error`` was awaited)."""
    expired: int = 0
    """Generations given up on at their deadline (``on_error`` got ``GenerationTimeout``)."""
    watching: int = 0
    """Generations watched right now."""

    @property
    def requests(self) -> int:
        return self.gets + self.lists


@attrs.define(eq=False)
class _Watch:
    id: str
    key: LatencyKey
    on_update: OnUpdate
    on_error: OnError | None
    submitted_at: float
    learn: bool
    deadline: float | None = None
    state: str | None = None
    token: int = 0
    next_at: float = 0.0
    last_check_age: float = 0.0
    """Age at the last check (any outcome)."""
    running_age: float = 0.0
    """Latest age at which the generation was known not to be terminal."""
    overdue_checks: int = 0
    errors: int = 0
    not_found: int = 0
    listable: bool = True
    checking: bool = False
    hinted: bool = False
    hints: int = 0


class Poller:
    """One loop that polls every watched generation until it is terminal.

    ``run()`` is the loop (start it in a task group, cancel it to stop).
    ``watch()`` adds a generation; its ``on_update`` is awaited for every observed
    change of state and once with the terminal ``Generation``, after which the id
    is forgotten. Keep ``on_update`` quick: it runs inside the loop.

    Tuning: ``min_interval`` is the shortest pause between two polling rounds and
    the smallest backoff step; ``max_interval`` caps the backoff. A generation
    still running at its expected time is checked again after
    ``step_fraction * expected`` (at least ``min_interval``), each step
    ``backoff_ratio`` times the last; one still ``queued`` then waits at least a
    quarter of the expected time. With no observation at all yet, every
    generation joins one series of probes from ``first_probe`` seconds, each
    ``probe_ratio`` times the oldest one's age. A ``list`` call (``list_page_size``
    per page, at most ``max_list_pages``) replaces gets when two or more due
    generations, or one plus another past ``ripe_fraction`` of its expected
    time, can be answered by it. ``max_hints`` bounds the checks one
    generation's hints can trigger.
    """

    def __init__(
        self,
        client: _StatusClient,
        *,
        clock: Clock = SYSTEM_CLOCK,
        estimator: LatencyEstimator | None = None,
        list_page_size: int = 100,
        min_interval: float = 0.01,
        max_interval: float = 30.0,
        step_fraction: float = 0.02,
        first_probe: float = 0.25,
        probe_ratio: float = 1.15,
        max_list_pages: int = 2,
        max_concurrent_gets: int = 8,
        not_found_limit: int = 3,
        ripe_fraction: float = 0.75,
        backoff_ratio: float = 1.5,
        max_hints: int = 8,
    ) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self._client = client
        self._clock = clock
        self.estimator = estimator if estimator is not None else LatencyEstimator()
        self._page_size = list_page_size
        self._min_interval = min_interval
        self._max_interval = max_interval
        self._step_fraction = step_fraction
        self._first_probe = max(first_probe, min_interval)
        self._probe_ratio = probe_ratio
        self._max_pages = max_list_pages
        self._get_limiter = anyio.CapacityLimiter(max_concurrent_gets)
        self._not_found_limit = not_found_limit
        self._ripe_fraction = ripe_fraction
        self._backoff_ratio = backoff_ratio
        # After failed status checks: 2, 4, 8... times min_interval, up to max_interval.
        self._error_backoff = RetryPolicy(
            initial=2 * min_interval, max=max_interval, jitter=0.0, total_timeout=math.inf
        )
        self._max_hints = max_hints
        self._watched: dict[str, _Watch] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._tokens = 0
        self._not_before = 0.0
        self._sleep_scope: anyio.CancelScope | None = None
        self._wake_at = math.inf
        self._round = 0
        self._cold_next_at = -math.inf
        self._streaks: dict[LatencyKey, tuple[int, int]] = {}
        self._undocumented: set[str] = set()
        self._stats: dict[str, int] = dict.fromkeys(attrs.fields_dict(PollerStats), 0)
        self.on_status: Callable[[BaseException | None], object] | None = None
        """Called with each status request's error, or None when the API answered
        (the scheduler learns from it whether the key and the network still work)."""

    # -- public surface -------------------------------------------------------

    def watch(
        self,
        generation_id: str,
        *,
        key: LatencyKey,
        on_update: OnUpdate,
        submitted_at: float | None = None,
        on_error: OnError | None = None,
        learn: bool = True,
        deadline: float | None = None,
    ) -> None:
        """Poll ``generation_id`` until it is terminal.

        ``submitted_at`` is when the create returned (``clock.monotonic()``; now by
        default). ``on_error`` is awaited (and the id forgotten) if the generation
        is gone: ``get`` answered 404 ``not_found_limit`` times in a row. Without
        it, a vanished generation keeps being polled at ``max_interval``. Pass
        ``learn=False`` when ``submitted_at`` is unknown (a job recovered after a
        restart), so its latency does not skew the estimator.

        ``deadline`` (``clock.monotonic()`` time) bounds the watch: the generation
        is checked once more then, and if it is still not terminal it is
        forgotten and ``on_error`` gets a ``GenerationTimeout``.
        """
        now = self._clock.monotonic()
        existing = self._watched.get(generation_id)
        if existing is not None:
            existing.on_update = on_update
            existing.on_error = on_error
            return
        w = _Watch(
            id=generation_id,
            key=key,
            on_update=on_update,
            on_error=on_error,
            submitted_at=now if submitted_at is None else submitted_at,
            learn=learn,
            deadline=deadline,
        )
        self._watched[generation_id] = w
        self._schedule(w, self._plan(w, now))

    def unwatch(self, generation_id: str) -> None:
        """Stop polling ``generation_id`` (no further ``on_update``)."""
        self._watched.pop(generation_id, None)

    def hint(self, generation_id: str) -> None:
        """Something (a callback) says ``generation_id`` changed: check it soon.

        The hint itself is not trusted: only the API's answer is delivered.
        """
        w = self._watched.get(generation_id)
        if w is None:
            self._stats["hints_ignored"] += 1
            return
        if w.hints >= self._max_hints:
            # Callbacks are unauthenticated: a flood must not turn into a flood of gets.
            self._stats["hints_ignored"] += 1
            return
        w.hints += 1
        self._stats["hints"] += 1
        if w.checking:
            w.hinted = True
            return
        soon = self._clock.monotonic() + self._min_interval / 2
        if soon < w.next_at:
            self._schedule(w, soon)

    def stats(self) -> PollerStats:
        return PollerStats(**{**self._stats, "watching": len(self._watched)})

    @property
    def watching(self) -> int:
        return len(self._watched)

    async def run(self) -> None:
        """Poll until cancelled. Sleeps until the next check, or a new watch or hint."""
        while True:
            next_at = await self.poll_once()
            now = self._clock.monotonic()
            target = math.inf if next_at is None else max(next_at, now + self._min_interval)
            # With nothing to watch, sleep until woken by watch()/hint().
            delay = 3600.0 if target == math.inf else target - now
            self._wake_at = now + delay
            try:
                with anyio.CancelScope() as scope:
                    self._sleep_scope = scope
                    await self._clock.sleep(delay)
            finally:
                self._sleep_scope = None
                self._wake_at = math.inf

    async def poll_once(self) -> float | None:
        """Check every generation that is due now; return the next due time (or None)."""
        now = self._clock.monotonic()
        if now < self._not_before:
            return self._not_before
        due = self._pop_due(now + self._min_interval / 2)
        if due:
            self._round += 1
            for w in due:
                w.checking = True
            try:
                await self._check(due)
            finally:
                # Also when cancelled mid-check: keep every generation on the heap.
                after = self._clock.monotonic()
                for w in due:
                    w.checking = False
                    if self._watched.get(w.id) is w:
                        self._reschedule(w, after)
            for w in due:
                if w.deadline is not None and after >= w.deadline:
                    await self._expire(w)
        return self._next_due()

    # -- scheduling -----------------------------------------------------------

    def _plan(self, w: _Watch, now: float) -> float:
        """When to check ``w`` next, after a check at ``now`` found it running."""
        age = now - w.submitted_at
        if self.estimator.samples() == 0:
            return self._cold_probe(now)
        expected = self.estimator.expected(w.key)
        if age < expected:
            return w.submitted_at + expected
        step = max(self._min_interval, self._step_fraction * expected)
        step *= self._backoff_ratio**w.overdue_checks
        if w.state == "queued":
            # Still queued when it should be done: it has not started dreaming yet.
            step = max(step, 0.25 * expected)
        w.overdue_checks += 1
        return now + min(step, self._max_interval)

    def _cold_probe(self, now: float) -> float:
        """Nothing learnt yet: every generation joins one geometric series of list probes.

        The rounds are ``first_probe`` apart at first, then ``probe_ratio - 1`` of the
        oldest generation's age, so detection lags by at most that fraction.
        """
        if self._cold_next_at > now:
            return self._cold_next_at
        oldest = min((x.submitted_at for x in self._watched.values()), default=now)
        age = now - oldest
        step = self._first_probe if age < self._first_probe else age * (self._probe_ratio - 1)
        self._cold_next_at = now + min(max(step, self._min_interval), self._max_interval)
        return self._cold_next_at

    def _reschedule(self, w: _Watch, now: float) -> None:
        if w.errors:
            backoff = self._error_backoff.backoff(min(w.errors, 20))
            at = now + min(max(backoff, self._min_interval), self._max_interval)
        else:
            at = max(self._plan(w, now), now + self._min_interval)
        if w.hinted:
            w.hinted = False
            at = min(at, now + self._min_interval)
        self._schedule(w, at)

    def _schedule(self, w: _Watch, at: float) -> None:
        if w.deadline is not None:
            at = min(at, w.deadline)  # one last check at the deadline
        self._tokens += 1
        w.token = self._tokens
        w.next_at = at
        heapq.heappush(self._heap, (at, w.token, w.id))
        if len(self._heap) > 2 * len(self._watched) + 64:
            self._heap = [(x.next_at, x.token, x.id) for x in self._watched.values()]
            heapq.heapify(self._heap)
        if self._sleep_scope is not None and at < self._wake_at:
            self._sleep_scope.cancel()

    def _pop_due(self, until: float) -> list[_Watch]:
        due: list[_Watch] = []
        while self._heap and self._heap[0][0] <= until:
            _, token, gid = heapq.heappop(self._heap)
            w = self._watched.get(gid)
            if w is not None and w.token == token:
                due.append(w)
        return due

    def _next_due(self) -> float | None:
        while self._heap:
            _, token, gid = self._heap[0]
            w = self._watched.get(gid)
            if w is not None and w.token == token:
                return max(self._heap[0][0], self._not_before)
            heapq.heappop(self._heap)
        return None

    # -- checking -------------------------------------------------------------

    async def _check(self, due: list[_Watch]) -> None:
        rest = due
        if self._worth_a_list(due):
            rest = await self._check_by_list(due)
        if rest:
            async with anyio.create_task_group() as tg:
                for w in rest:
                    tg.start_soon(self._check_by_get, w)

    def _worth_a_list(self, due: list[_Watch]) -> bool:
        """One list call beats a get when it can answer two or more likely-done generations."""
        ripe = sum(1 for w in due if w.listable)
        if ripe >= 2:
            return True
        if ripe == 0:
            return False
        if self.estimator.samples() == 0:
            return len(self._watched) >= 2
        now = self._clock.monotonic()
        return any(
            w.listable
            and not w.checking
            and now - w.submitted_at >= self._ripe_fraction * self.estimator.expected(w.key)
            for w in self._watched.values()
        )

    async def _check_by_list(self, due: list[_Watch]) -> list[_Watch]:
        """Answer ``due`` from newest-first list pages; return those still unanswered."""
        missing = {w.id: w for w in due}
        offset = 0
        for _ in range(self._max_pages):
            sent = self._clock.monotonic()
            self._stats["lists"] += 1
            try:
                page = await self._list(offset)
            except Exception as exc:
                self._failed("list", exc, due)
                return []
            received = self._clock.monotonic()
            self._report(None)
            generations = list(page.generations)
            for g in generations:
                w = self._watched.get(g.id)
                if w is None:
                    continue
                self._stats["found_in_list"] += 1
                if missing.pop(g.id, None) is None and g.is_terminal:
                    self._stats["early"] += 1
                await self._apply(w, g, sent, received)
            listable_missing = sum(1 for w in missing.values() if w.listable)
            if not page.has_more or listable_missing < 2 or len(generations) == 0:
                break
            offset += len(generations)
        for w in missing.values():
            if w.listable:
                # Not on the first page(s): older than the list reaches; use get from now on.
                w.listable = False
                self._stats["missed_in_list"] += 1
        return [w for w in missing.values() if self._watched.get(w.id) is w]

    async def _check_by_get(self, w: _Watch) -> None:
        async with self._get_limiter:
            if self._watched.get(w.id) is not w:
                return
            sent = self._clock.monotonic()
            self._stats["gets"] += 1
            try:
                g = await self._get(w.id)
            except NotFoundError as exc:
                # Just-created ids can 404 briefly; a generation that keeps 404ing is gone.
                w.not_found += 1
                if w.not_found >= self._not_found_limit and w.on_error is not None:
                    self._forget(w, why="gone")
                    await self._deliver_error(w, exc)
                    return
                self._failed("get", exc, [w])
                return
            except Exception as exc:
                self._failed("get", exc, [w])
                return
            self._report(None)
            w.not_found = 0
            await self._apply(w, g, sent, self._clock.monotonic())

    # The poller owns the retry of a status read (it reschedules with back-off,
    # and pauses the lot on a 429): a LumaClient makes each read one attempt.

    async def _get(self, generation_id: str) -> Generation:
        if isinstance(self._client, LumaClient):
            return await self._client.get(generation_id, retry=False)
        return await self._client.get(generation_id)

    async def _list(self, offset: int) -> GenerationPage:
        if isinstance(self._client, LumaClient):
            return await self._client.list(limit=self._page_size, offset=offset, retry=False)
        return await self._client.list(limit=self._page_size, offset=offset)

    def _failed(self, what: str, exc: Exception, watches: list[_Watch]) -> None:
        self._report(exc)
        self._stats["errors"] += 1
        for w in watches:
            w.errors += 1
        if isinstance(exc, RateLimitError):
            pause = exc.retry_after if exc.retry_after is not None else self._max_interval / 4
            pause = min(max(pause, self._min_interval), self._max_interval)
            self._not_before = max(self._not_before, self._clock.monotonic() + pause)
        if isinstance(exc, LumaError):
            logger.warning("status %s failed (will retry): %s", what, exc)
        else:
            logger.warning("status %s failed (will retry)", what, exc_info=exc)

    def _report(self, error: BaseException | None) -> None:
        if self.on_status is not None:
            try:
                self.on_status(error)
            except Exception:
                logger.exception("on_status hook failed")

    async def _apply(self, w: _Watch, g: Generation, sent: float, received: float) -> None:
        """Deliver what the API said about ``w``."""
        if self._watched.get(w.id) is not w:
            return
        w.errors = 0
        w.last_check_age = received - w.submitted_at
        state = str(g.state)
        if g.is_terminal:
            self._forget(w)
            if w.learn and state == "completed":
                self._learn(w, received - w.submitted_at)
            await self._deliver(w, g)
            return
        w.running_age = max(w.running_age, sent - w.submitted_at)
        if state not in _DOCUMENTED and state not in self._undocumented:
            self._undocumented.add(state)
            logger.warning(
                "generation %s is in the undocumented state %r: treated as still running "
                "(until the job timeout)",
                w.id,
                state,
            )
        if state != w.state:
            w.state = state
            await self._deliver(w, g)

    def _learn(self, w: _Watch, hi: float) -> None:
        """Feed the estimator. The true latency lies in ``(running_age, hi]``."""
        lo = min(w.running_age, hi)
        if lo > 0:
            self._streaks.pop(w.key, None)
            # A tight bracket (a check a step or two before just missed it): the
            # upper bound, so the next check at the estimate finds it done. A loose
            # one (last seen running long before, in a list read for others): its
            # middle; its upper bound would keep an estimate once too high there.
            step = max(self._min_interval, self._step_fraction * hi)
            point = hi if hi - lo <= 2 * step else (lo + hi) / 2
        else:
            # Done at the first look: it may have finished long before. Shade the
            # upper bound, more on each round in a row, until a check misses.
            streak, last_round = self._streaks.get(w.key, (0, -1))
            if last_round != self._round:
                streak += 1
                self._streaks[w.key] = (streak, self._round)
            # The shade is capped at 25% from streak 5 on; cap the exponent so a long
            # streak (thousands of instant jobs) cannot overflow the float.
            point = hi * (1 - min(0.03 * 2.0 ** min(streak - 1, 8), 0.25))
        self.estimator.observe(w.key, point)

    def _forget(self, w: _Watch, *, why: str = "finished") -> None:
        if self._watched.get(w.id) is w:
            del self._watched[w.id]
            self._stats[why] += 1

    async def _expire(self, w: _Watch) -> None:
        """``w`` passed its deadline without a terminal state: give up on it."""
        if self._watched.get(w.id) is not w or w.deadline is None:
            return
        self._forget(w, why="expired")
        error = GenerationTimeout(w.id, round(w.deadline - w.submitted_at, 3), w.state)
        if w.on_error is None:
            logger.warning("%s", error)
            return
        await self._deliver_error(w, error)

    async def _deliver(self, w: _Watch, g: Generation) -> None:
        try:
            await w.on_update(g)
        except Exception:
            logger.exception("on_update for generation %s raised", w.id)

    async def _deliver_error(self, w: _Watch, exc: BaseException) -> None:
        assert w.on_error is not None
        try:
            await w.on_error(exc)
        except Exception:
            logger.exception("on_error for generation %s raised", w.id)
