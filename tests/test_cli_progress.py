"""The run display's ETA: the scheduler's own latency estimate, not a second one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import attrs

from lumasched.api import ImageRequest, VideoRequest
from lumasched.cli import _progress
from lumasched.engine.events import FamilyCounts
from lumasched.engine.jobs import JobEvent, JobState
from lumasched.engine.poller import LatencyEstimator, latency_key_for
from lumasched.limits import Family, FamilyLimits, Limits

LIMITS = Limits(
    video=FamilyLimits(concurrency=2, requests=10, per_seconds=60.0),
    image=FamilyLimits(concurrency=4, requests=100, per_seconds=60.0),
)


@attrs.define
class _Job:
    request: Any


@attrs.define
class _Poller:
    estimator: LatencyEstimator = attrs.Factory(LatencyEstimator)


@attrs.define
class _Scheduler:
    """What the display reads of a scheduler: its jobs, its poller, its events."""

    jobs: dict[str, _Job] = attrs.Factory(dict)
    poller: _Poller = attrs.Factory(_Poller)
    listeners: list[Any] = attrs.Factory(list)

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def get(self, key: str) -> _Job | None:
        return self.jobs.get(key)

    def submit(self, key: str, request: Any, family: Family) -> None:
        self.jobs[key] = _Job(request)
        event = JobEvent(key, JobState.CREATING, JobState.SUBMITTED, 0.0, family, "g-" + key)
        for listener in self.listeners:
            listener(event)


def test_eta_uses_the_pollers_latency_estimate(tmp_path: Path) -> None:
    """A family's ETA follows the scheduler's estimator (the poller's), weighted by
    the requests submitted, with no completion seen by the display itself."""
    scheduler = _Scheduler()
    display = _progress.LogDisplay(
        limits=LIMITS, totals={Family.VIDEO: 6, Family.IMAGE: 1}, file=io.StringIO()
    )
    display.start(scheduler, tmp_path)
    counts = FamilyCounts(submitted=2)
    assert display.eta(Family.VIDEO, counts) is None  # nothing learnt yet

    fast = VideoRequest("a fox runs", model="ray-flash-2")
    slow = VideoRequest("a fox runs", model="ray-2", resolution="1080p")
    scheduler.poller.estimator.observe(latency_key_for(fast), 10.0)
    scheduler.poller.estimator.observe(latency_key_for(slow), 40.0)
    scheduler.submit("a", fast, Family.VIDEO)
    scheduler.submit("b", slow, Family.VIDEO)
    scheduler.submit("c", ImageRequest("a fox"), Family.IMAGE)

    # 6 videos, none finished, 2 at a time: 3 waves of the mean latency (25 s).
    assert display.eta(Family.VIDEO, counts) == 3 * 25.0
    image = scheduler.poller.estimator.expected(latency_key_for(ImageRequest("a fox")))
    assert display.eta(Family.IMAGE, FamilyCounts(submitted=1)) == image
