"""``SchedulerMetrics``: what one scheduler has done and is doing, as metrics.

It observes the engine from outside, through the hooks the engine already
offers: ``Scheduler.counters()``, the client's, poller's and downloader's
statistics, the limiter's ``statistics()`` and the job events (for the
latency histograms and failures by category). Labels stay few: family, model,
state, outcome, failure category; never a job key or generation id.

The limiter's statistics are async (a shared limiter reads Redis), so they
are read by ``refresh()``; exporters call it before a scrape, and
``async with metrics:`` refreshes every ``interval`` seconds for exporters
that read on their own thread (a user's ``prometheus_client`` server).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

import anyio
from anyio.abc import TaskGroup

from lumasched.api import Family
from lumasched.engine.jobs import TERMINAL_STATES, Job, JobEvent, JobState
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
    DependencyFailed,
    DownloadError,
    FailureCategory,
    GenerationFailed,
    GenerationTimeout,
    StorageError,
)
from lumasched.limits import FamilyStatistics
from lumasched.observe._model import (
    DOWNLOAD_BUCKETS,
    LATENCY_BUCKETS,
    Histogram,
    Kind,
    Labels,
    Metric,
    Sample,
)

if TYPE_CHECKING:
    from lumasched.engine.scheduler import Scheduler

__all__ = ["DEFAULT_REFRESH_INTERVAL", "MetricsSource", "SchedulerMetrics", "failure_category"]

logger = logging.getLogger("lumasched.observe")

DEFAULT_REFRESH_INTERVAL = 1.0

Observer = Callable[[str, Labels, float], None]
"""Called with (histogram name, labels, value) on every observation (OTel records these)."""

REQUEUE_REASONS = frozenset({"rate_limited", "reconciled_absent", "unreachable"})

# The states a job passes through before it ends, as gauge label values.
# ``submitted`` is shown as the live display shows it: "dreaming" (on the server).
_LIVE_STATES = {
    "pending": "pending",
    "waiting": "waiting",
    "queued": "queued",
    "creating": "creating",
    "dreaming": "submitted",
    "downloading": "downloading",
}


class MetricsSource:
    """Something exporters read: ``refresh()`` (async) then ``collect()`` (sync)."""

    async def refresh(self) -> None:
        """Read what can only be read asynchronously."""

    def collect(self) -> list[Metric]:
        raise NotImplementedError


def failure_category(error: BaseException | None) -> str:
    """A failed job's reason, as one of a few label values."""
    if isinstance(error, GenerationFailed):
        return str(error.category)
    if isinstance(error, AmbiguousCreateError):
        return "ambiguous"
    if isinstance(error, GenerationTimeout):
        return "timeout"
    if isinstance(error, DownloadError):
        return "download"
    if isinstance(error, DependencyFailed):
        return "dependency"
    if isinstance(error, StorageError):
        return "storage"
    if isinstance(error, APIStatusError):
        return "rejected" if 400 <= error.status < 500 else "server_error"
    return str(FailureCategory.UNKNOWN)


def _model(job: Job | None) -> str:
    model = getattr(job.request, "model", None) if job is not None else None
    return model if isinstance(model, str) else "none"


def _counter(name: str, help: str, value: float, labels: Labels = ()) -> Metric:
    return Metric(name, Kind.COUNTER, help, (Sample(labels, float(value)),))


class SchedulerMetrics(MetricsSource):
    """Metrics of one ``Scheduler``; create it once the scheduler exists::

        metrics = SchedulerMetrics(scheduler)
        lumasched.observe.prometheus.register(metrics)         # or observe.otel.instrument
        async with metrics:                                    # refresh every second
            ...

    ``collect()`` returns the metric families (see docs/observability.md).
    """

    def __init__(self, scheduler: Scheduler, *, interval: float = DEFAULT_REFRESH_INTERVAL) -> None:
        self._scheduler = scheduler
        self.interval = interval
        self._limits: dict[Family, FamilyStatistics] = {}
        self._paused: dict[Family, float] = dict.fromkeys(Family, 0.0)
        self._sampled_at: float | None = None
        self._outcomes: Counter[tuple[str, str, str]] = Counter()
        """(family, model, outcome) of finished jobs."""
        self._failures: Counter[tuple[str, str, str]] = Counter()
        """(family, model, category) of failed jobs."""
        self.latency = Histogram(
            "lumasched_generation_latency_seconds",
            "Seconds from a create's acceptance to its generation completing, per family.",
            LATENCY_BUCKETS,
        )
        self.download_time = Histogram(
            "lumasched_download_duration_seconds",
            "Seconds from a generation completing to its file being in place, per family.",
            DOWNLOAD_BUCKETS,
        )
        self._requeues: Counter[tuple[str, str]] = Counter()
        """(family, reason) of creates that surely did not happen; and reconciles given up."""
        self._observers: list[Observer] = []
        self._thread = threading.get_ident()
        self._snapshot: list[Metric] = []
        self._task_group: TaskGroup | None = None
        self._stop_listening = scheduler.add_listener(self._on_event)
        self._snapshot = self._build()

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.refresh()
        self._task_group = await anyio.create_task_group().__aenter__()
        self._task_group.start_soon(self._refresh_loop)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        # Only our own loop runs in the group: ending it must not wrap an
        # exception passing through the caller's ``async with`` into a group.
        await self._task_group.__aexit__(None, None, None)
        self._task_group = None

    async def _refresh_loop(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:
                # A shared limiter whose Redis is away: keep the last numbers.
                logger.warning("metrics: reading the limiter failed", exc_info=True)

    def close(self) -> None:
        """Stop observing the scheduler's job events (the counters stay readable)."""
        self._stop_listening()

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(name, labels, value)`` on every histogram observation."""
        self._observers.append(observer)

    # -- reading -------------------------------------------------------------------

    async def refresh(self) -> None:
        stats = await self._scheduler.limiter.statistics()
        now = time.monotonic()
        if self._sampled_at is not None:
            # A pause known at the last sample lasted until now or its end: a
            # lower bound of the time spent backing off (pauses that begin and
            # end between two samples are missed, so keep ``interval`` short).
            elapsed = now - self._sampled_at
            for family, old in self._limits.items():
                self._paused[family] += min(elapsed, old.penalty_remaining)
        self._limits, self._sampled_at = stats, now
        self._snapshot = self._build()

    def _on_event(self, event: JobEvent) -> None:
        if event.old is event.new:
            return
        if event.new is JobState.QUEUED:
            reason = event.info.get("reason")
            if event.old is JobState.CREATING and isinstance(reason, str):
                # A create that surely did not happen: why (a few fixed reasons).
                known = reason if reason in REQUEUE_REASONS else "other"
                self._requeues[event.family.value, known] += 1
            return
        if event.new not in TERMINAL_STATES:
            return
        job = self._scheduler.get(event.key)
        family, model = event.family.value, _model(job)
        self._outcomes[family, model, event.new.value] += 1
        if event.new is JobState.FAILED:
            if job is None:
                self._failures[family, model, failure_category(None)] += 1
            else:
                # The event comes just before the job's error is set on it.
                job._add_done_callback(lambda done: self._count_failure(family, model, done))
        if event.new is not JobState.COMPLETED or job is None:
            return
        timings, labels = job.timings, (("family", family),)
        if timings.created is not None and timings.completed is not None:
            self._observe(self.latency, labels, timings.completed - timings.created)
        if timings.completed is not None and timings.downloaded is not None:
            self._observe(self.download_time, labels, timings.downloaded - timings.completed)

    def _requeued(self, reason: str) -> int:
        return sum(n for (_, r), n in self._requeues.items() if r == reason)

    def _count_failure(self, family: str, model: str, job: Job) -> None:
        self._failures[family, model, failure_category(job.error)] += 1
        if isinstance(job.error, AmbiguousCreateError):
            self._requeues[family, "reconcile_gave_up"] += 1

    def _observe(self, histogram: Histogram, labels: Labels, value: float) -> None:
        value = max(0.0, value)
        histogram.observe(labels, value)
        for observer in self._observers:
            observer(histogram.name, labels, value)

    def collect(self) -> list[Metric]:
        """The metrics now; from another thread (a ``prometheus_client`` server, an
        OTel reader), those of the last ``refresh()``, as the engine's counters may
        only be read on its own thread."""
        if threading.get_ident() != self._thread:
            return self._snapshot
        return self._build()

    def _build(self) -> list[Metric]:
        s = self._scheduler
        counters = s.counters()
        client = s.client.stats
        poller = s.poller.stats()
        downloader = s.downloader.stats() if s.downloader is not None else None
        out = [
            _counter(
                "lumasched_creates_sent_total",
                "Create requests sent (each attempt, 429s included).",
                counters.create_attempts,
            ),
            _counter(
                "lumasched_creates_accepted_total",
                "Creates the server accepted (plus generations adopted by reconcile).",
                counters.creates,
            ),
            _counter(
                "lumasched_rate_limited_total",
                "429 answers to creates (each re-queued, never a failure).",
                counters.rate_limited,
            ),
            _counter(
                "lumasched_ambiguous_creates_total",
                "Creates whose answer was lost (reconciled, never blindly re-sent).",
                counters.ambiguous_creates,
            ),
            _counter(
                "lumasched_reconciles_total",
                "List-endpoint reconcile passes run for ambiguous creates.",
                counters.reconciles,
            ),
            Metric(
                "lumasched_reconcile_outcomes_total",
                Kind.COUNTER,
                "Ambiguous creates settled by reconcile, by outcome: found (adopted), "
                "absent (created again), gave_up (failed: could not tell).",
                (
                    Sample((("outcome", "found"),), counters.reconciled_found),
                    Sample((("outcome", "absent"),), self._requeued("reconciled_absent")),
                    Sample((("outcome", "gave_up"),), self._requeued("reconcile_gave_up")),
                ),
            ),
            Metric(
                "lumasched_requeues_total",
                Kind.COUNTER,
                "Creates that surely did not happen, queued again, by family and reason "
                "(rate_limited, reconciled_absent, unreachable, other).",
                tuple(
                    Sample((("family", f.value), ("reason", r)), self._requeues[f.value, r])
                    for f in sorted(Family)
                    for r in sorted(REQUEUE_REASONS | {"other"})
                ),
            ),
            _counter(
                "lumasched_polls_total", "Status requests (get) made by the poll loop.", poller.gets
            ),
            _counter(
                "lumasched_list_calls_total",
                "List-endpoint pages read by the poll loop.",
                poller.lists,
            ),
            _counter(
                "lumasched_api_requests_total",
                "HTTP requests the client sent (every attempt).",
                client.requests,
            ),
            _counter(
                "lumasched_api_retries_total",
                "Client requests retried after a transient failure.",
                client.retries,
            ),
            _counter(
                "lumasched_downloads_total", "Files downloaded into place.", counters.downloads
            ),
            _counter(
                "lumasched_downloaded_bytes_total",
                "Bytes of assets received.",
                counters.bytes_downloaded,
            ),
            _counter(
                "lumasched_download_retries_total",
                "Download attempts that failed and were retried.",
                downloader.retries if downloader is not None else 0,
            ),
            _counter(
                "lumasched_events_dropped_total",
                "Job events a slow subscriber lost.",
                counters.events_dropped,
            ),
            Metric(
                "lumasched_jobs_finished_total",
                Kind.COUNTER,
                "Jobs that ended, by family, model and outcome (completed, failed, cancelled).",
                tuple(
                    Sample((("family", f), ("model", m), ("outcome", o)), n)
                    for (f, m, o), n in sorted(self._outcomes.items())
                ),
            ),
            Metric(
                "lumasched_generations_failed_total",
                Kind.COUNTER,
                "Failed jobs by family, model and failure category (moderation, "
                "input_frames, prompt, job, unknown, timeout, download, dependency, "
                "rejected, server_error, storage).",
                tuple(
                    Sample((("family", f), ("model", m), ("category", c)), n)
                    for (f, m, c), n in sorted(self._failures.items())
                ),
            ),
            Metric(
                "lumasched_jobs",
                Kind.GAUGE,
                "Unfinished jobs by family and state (dreaming: on the server, queued "
                "or dreaming there).",
                tuple(
                    Sample((("family", family.value), ("state", label)), getattr(fc, field))
                    for family, fc in sorted(counters.families.items())
                    for label, field in _LIVE_STATES.items()
                ),
            ),
            *self._limiter_metrics(),
            self.latency.metric(),
            self.download_time.metric(),
        ]
        return out

    def _limiter_metrics(self) -> list[Metric]:
        def gauge(name: str, help: str, value: Callable[[FamilyStatistics], float]) -> Metric:
            return Metric(
                name,
                Kind.GAUGE,
                help,
                tuple(
                    Sample((("family", f.value),), float(value(st)))
                    for f, st in sorted(self._limits.items())
                ),
            )

        return [
            gauge(
                "lumasched_concurrency_in_use",
                "Concurrency slots held (creating or on the server).",
                lambda st: st.held,
            ),
            gauge(
                "lumasched_concurrency_limit",
                "The account's concurrency cap.",
                lambda st: st.concurrency_limit,
            ),
            gauge(
                "lumasched_concurrency_effective_limit",
                "The cap after 429 back-off.",
                lambda st: st.effective_concurrency,
            ),
            gauge(
                "lumasched_window_creates",
                "Creates granted in the current rate window.",
                lambda st: st.window_used,
            ),
            gauge(
                "lumasched_window_limit",
                "Creates allowed per rate window.",
                lambda st: st.window_limit,
            ),
            gauge(
                "lumasched_window_effective_limit",
                "Creates allowed per window after 429 back-off.",
                lambda st: st.effective_window_limit,
            ),
            gauge(
                "lumasched_backoff_factor",
                "Effective rate over configured rate: 1 at full speed, lower after 429s.",
                lambda st: st.effective_window_limit / st.window_limit,
            ),
            gauge(
                "lumasched_rate_limit_pause_seconds",
                "Seconds left of the pause after a 429.",
                lambda st: st.penalty_remaining,
            ),
            gauge(
                "lumasched_limiter_waiting",
                "Creates waiting for a slot and a rate token.",
                lambda st: st.waiting,
            ),
            Metric(
                "lumasched_rate_limit_paused_seconds_total",
                Kind.COUNTER,
                "Seconds creating was paused after 429s (sampled: a lower bound).",
                tuple(
                    Sample((("family", f.value),), self._paused[f]) for f in sorted(self._limits)
                ),
            ),
        ]
