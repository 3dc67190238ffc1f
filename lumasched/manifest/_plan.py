"""The dry-run plan: what a manifest asks for, how fast the limits let it finish,
and what it should cost. Pure computation; ``cli.py`` prints it.

The fastest possible time is an event simulation per family: every create leaves
as early as both limits allow (a free concurrency slot, and at most ``requests``
creates in any window of ``per_seconds``), every generation takes its expected
latency, and completion is noticed at once. Items that build on other items
(extend, upscale, audio) start only after those finish.
"""

from __future__ import annotations

import heapq
from collections import deque

import attrs

from lumasched.api import CreateRequest, Family
from lumasched.engine.poller import LatencyEstimator, latency_key_for
from lumasched.limits import Limits
from lumasched.manifest import ManifestItem
from lumasched.pricing import PriceTable, estimate_cost_cents

__all__ = ["Plan", "PlanGroup", "Planner", "expected_latency"]

_PRIORS = LatencyEstimator()


def expected_latency(request: CreateRequest) -> float:
    """Planning latency in seconds for one request: the poller's priors for the
    real service (the scheduler learns real latencies as it runs)."""
    return _PRIORS.prior(latency_key_for(request))


@attrs.frozen
class PlanGroup:
    family: Family
    kind: str
    model: str | None
    items: int
    cost_cents: float
    unpriced: int


@attrs.frozen
class Plan:
    """The dry-run's findings."""

    items: int
    groups: list[PlanGroup]
    fastest_seconds: dict[Family, float]
    cost_cents: float
    unpriced: int
    dependent: int

    @property
    def fastest_total(self) -> float:
        return max(self.fastest_seconds.values(), default=0.0)


@attrs.define
class _Tally:
    items: int = 0
    cost_cents: float = 0.0
    unpriced: int = 0


class _FamilySim:
    """The greedy best schedule of one family (see the module docstring)."""

    def __init__(self, concurrency: int, requests: int, per_seconds: float) -> None:
        self.concurrency = concurrency
        self.requests = requests
        self.per_seconds = per_seconds
        self.running: list[float] = []
        self.window: deque[float] = deque()
        self.now = 0.0
        self.makespan = 0.0

    def add(self, latency: float, ready: float = 0.0) -> float:
        slot_free = heapq.heappop(self.running) if len(self.running) == self.concurrency else 0.0
        rate_free = (
            self.window.popleft() + self.per_seconds if len(self.window) == self.requests else 0.0
        )
        self.now = max(self.now, slot_free, rate_free, ready)
        finish = self.now + latency
        heapq.heappush(self.running, finish)
        self.window.append(self.now)
        self.makespan = max(self.makespan, finish)
        return finish


class Planner:
    """Feed it every item (``Manifest.check(on_item=planner.add)``), then ``plan()``."""

    def __init__(
        self,
        limits: Limits,
        *,
        prices: PriceTable | None = None,
        latency_scale: float = 1.0,
    ) -> None:
        self._limits = limits
        self._prices = prices
        self._latency_scale = latency_scale
        self._sims = {
            family: _FamilySim(
                limits[family].concurrency, limits[family].requests, limits[family].per_seconds
            )
            for family in Family
        }
        self._groups: dict[tuple[Family, str, str | None], _Tally] = {}
        self._count = 0
        self._dependent = 0
        # Items that build on others run after the independent ones (their
        # inputs are not known until then); only their latencies and deps are kept.
        self._later: list[tuple[str, Family, float, tuple[str, ...]]] = []
        self._referenced_finish: dict[str, float] = {}

    def add(self, item: ManifestItem) -> None:
        self._count += 1
        body = item.request.to_body()
        family = item.family
        tally = self._groups.setdefault((family, item.kind, item.request.model), _Tally())
        tally.items += 1
        try:
            tally.cost_cents += estimate_cost_cents(item.kind, body, self._prices)
        except ValueError:
            tally.unpriced += 1
        latency = expected_latency(item.request) * self._latency_scale
        if item.deps:
            self._dependent += 1
            self._later.append((item.id, family, latency, item.deps))
        else:
            self._referenced_finish[item.id] = self._sims[family].add(latency)

    def plan(self) -> Plan:
        for item_id, family, latency, deps in self._later:
            ready = max((self._referenced_finish.get(dep, 0.0) for dep in deps), default=0.0)
            self._referenced_finish[item_id] = self._sims[family].add(latency, ready)
        self._later.clear()
        groups = [
            PlanGroup(family, kind, model, tally.items, tally.cost_cents, tally.unpriced)
            for (family, kind, model), tally in sorted(
                self._groups.items(), key=lambda kv: (kv[0][0].value, kv[0][1], kv[0][2] or "")
            )
        ]
        return Plan(
            items=self._count,
            groups=groups,
            fastest_seconds={
                family: sim.makespan for family, sim in self._sims.items() if sim.makespan > 0
            },
            cost_cents=sum(g.cost_cents for g in groups),
            unpriced=sum(g.unpriced for g in groups),
            dependent=self._dependent,
        )
