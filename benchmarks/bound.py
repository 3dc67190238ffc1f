"""The best makespan an account's limits permit: the yardstick for every timing benchmark.

A batch of jobs is created under one family's limits: at most ``concurrency``
generations in flight (a slot is held from the create until the generation is
terminal) and at most ``requests`` creates in any window of ``per_seconds``.
The best possible schedule sends every create as early as *both* limits allow
and notices every completion the instant it happens. That is an exact event
simulation, not an estimate:

* create ``i`` may leave once a slot is free: the earliest completion among
  the jobs holding slots (a min-heap of finish times);
* and once the sliding window allows it: ``t[i] >= t[i - requests] + per_seconds``
  (creates exactly ``per_seconds`` apart are the limit of "at most ``requests``
  in any window"; a real client must keep a margin, which is part of what the
  benchmarks measure).

For equal latencies this greedy schedule is optimal (no create can leave
earlier than the earliest instant both constraints admit, and taking it never
delays a later create), so the result is a true lower bound on the makespan.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Schedule", "best_makespan", "best_schedule", "closed_form_makespan"]


@dataclass(frozen=True)
class Schedule:
    """When each create leaves and when each job ends in the best schedule."""

    creates: tuple[float, ...]
    finishes: tuple[float, ...]

    @property
    def makespan(self) -> float:
        return max(self.finishes, default=0.0)


def best_schedule(
    latencies: Sequence[float],
    *,
    concurrency: int,
    requests: int,
    per_seconds: float,
) -> Schedule:
    """Simulate the best schedule for jobs of the given latencies, in submission order."""
    if concurrency < 1 or requests < 1 or per_seconds <= 0:
        raise ValueError("concurrency and requests must be >= 1 and per_seconds > 0")
    if any(latency < 0 for latency in latencies):
        raise ValueError("latencies must be >= 0")
    running: list[float] = []  # finish times of the jobs holding slots
    window: deque[float] = deque()  # the last `requests` create times
    creates: list[float] = []
    finishes: list[float] = []
    now = 0.0
    for latency in latencies:
        # Only the order of completions matters, so the freed slot is the earliest finish.
        slot_free = heapq.heappop(running) if len(running) == concurrency else 0.0
        rate_free = window.popleft() + per_seconds if len(window) == requests else 0.0
        now = max(now, slot_free, rate_free)
        creates.append(now)
        finish = now + latency
        finishes.append(finish)
        heapq.heappush(running, finish)
        window.append(now)
    return Schedule(tuple(creates), tuple(finishes))


def best_makespan(
    jobs: int,
    latency: float,
    *,
    concurrency: int,
    requests: int,
    per_seconds: float,
) -> float:
    """The best makespan for ``jobs`` jobs of equal ``latency`` seconds."""
    return best_schedule(
        [latency] * jobs, concurrency=concurrency, requests=requests, per_seconds=per_seconds
    ).makespan


def closed_form_makespan(
    jobs: int,
    latency: float,
    *,
    concurrency: int,
    requests: int,
    per_seconds: float,
) -> float:
    """The same bound in closed form when one limit clearly dominates (a cross-check).

    With equal latencies, jobs go in waves: the concurrency limit alone gives
    ``ceil(n / C) * L``; the rate limit alone gives ``floor((n - 1) / R) * W + L``.
    When ``L >= W`` and ``C <= R`` every wave is slot-bound; when ``C >= n`` only
    the rate binds. Other mixes need the simulation.
    """
    if jobs == 0:
        return 0.0
    if concurrency >= jobs:
        return math.floor((jobs - 1) / requests) * per_seconds + latency
    if concurrency <= requests and latency >= per_seconds:
        return math.ceil(jobs / concurrency) * latency
    raise ValueError("no closed form for this mix of limits; use best_makespan")
