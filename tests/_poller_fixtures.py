"""Fakes for poll-loop tests: a virtual clock and a status API driven by it."""

from __future__ import annotations

import heapq
import itertools
from datetime import UTC, datetime

import anyio
import attrs

from lumasched.errors import NotFoundError

TERMINAL = frozenset({"completed", "failed"})


class FakeClock:
    """Virtual time that jumps forward on every sleep (the poll loop is its only sleeper)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.sleep(0)


@attrs.frozen
class FakeGeneration:
    id: str
    state: str
    created_at: datetime | None = None
    failure_reason: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL


@attrs.frozen
class FakePage:
    generations: list[FakeGeneration]
    count: int
    has_more: bool
    limit: int
    offset: int


@attrs.define
class _Job:
    id: str
    created: float
    latency: float
    queued_for: float
    outcome: str
    states: list[tuple[float, str]] | None = None


class FakeStatusClient:
    """Generations whose state follows the clock; counts get/list calls.

    A job is ``queued`` for ``queued_for`` seconds, then ``dreaming``, then
    ``outcome`` at ``latency``. ``states`` overrides that with explicit
    ``(age, state)`` steps. ``faults`` holds exceptions raised by the next calls.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.jobs: dict[str, _Job] = {}
        self.gets = 0
        self.lists = 0
        self.faults: list[Exception] = []
        self._ids = itertools.count(1)

    def create(
        self,
        latency: float,
        *,
        queued_for: float = 0.0,
        outcome: str = "completed",
        states: list[tuple[float, str]] | None = None,
    ) -> str:
        gid = f"gen-{next(self._ids):05d}"
        self.jobs[gid] = _Job(gid, self.clock.now, latency, queued_for, outcome, states)
        return gid

    def state_of(self, job: _Job) -> str:
        age = self.clock.now - job.created
        if job.states is not None:
            current = "queued"
            for at, state in job.states:
                if age >= at:
                    current = state
            return current
        if age >= job.latency:
            return job.outcome
        return "queued" if age < job.queued_for else "dreaming"

    def _view(self, job: _Job) -> FakeGeneration:
        return FakeGeneration(job.id, self.state_of(job), datetime.now(UTC))

    def _maybe_fail(self) -> None:
        if self.faults:
            raise self.faults.pop(0)

    async def get(self, generation_id: str) -> FakeGeneration:
        self.gets += 1
        self._maybe_fail()
        job = self.jobs.get(generation_id)
        if job is None:
            raise NotFoundError(404, "Generation not found")
        return self._view(job)

    async def list(self, limit: int = 100, offset: int = 0) -> FakePage:
        self.lists += 1
        self._maybe_fail()
        newest_first = list(reversed(self.jobs.values()))
        page = newest_first[offset : offset + limit]
        return FakePage(
            [self._view(j) for j in page],
            len(newest_first),
            offset + limit < len(newest_first),
            limit,
            offset,
        )

    @property
    def requests(self) -> int:
        return self.gets + self.lists


def best_makespan(latencies: list[float], concurrency: int) -> float:
    """Makespan when every completion is noticed instantly and creates are free."""
    slots = [0.0] * concurrency
    end = 0.0
    for latency in latencies:
        start = heapq.heappop(slots)
        heapq.heappush(slots, start + latency)
        end = max(end, start + latency)
    return end
