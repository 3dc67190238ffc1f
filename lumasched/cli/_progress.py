"""What ``lumasched run`` shows while it works, and the summary at the end.

Two displays read the same scheduler counters and job events: a live ``rich``
table when stdout is a terminal, and plain timestamped log lines otherwise (or
with ``--no-progress``). Both end with the same summary.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lumasched.api import Family
from lumasched.engine.events import Counters, FamilyCounts
from lumasched.engine.jobs import Job, JobEvent, JobResult, JobState
from lumasched.engine.poller import LatencyEstimator, LatencyKey, latency_key_for
from lumasched.limits import Limits

__all__ = ["LiveDisplay", "LogDisplay", "format_bytes", "format_duration", "make_display"]

_STATUS_EVERY = 5.0  # seconds between plain status lines
_LIVE_REFRESH = 0.25


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``3m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class _Base:
    """Shared state: counters, ETA, and the summary."""

    def __init__(self, *, limits: Limits, totals: dict[Family, int], console: Console) -> None:
        self.limits = limits
        self.totals = totals
        self.console = console
        self.scheduler: Any = None
        self.out_dir: Path | None = None
        self.started = time.monotonic()
        self._mix: dict[Family, Counter[LatencyKey]] = {}
        """Per family: the latency keys of the jobs created so far, with counts."""

    # -- wiring ---------------------------------------------------------------

    def start(self, scheduler: Any, out_dir: Path) -> None:
        self.scheduler = scheduler
        self.out_dir = out_dir
        self.started = time.monotonic()
        scheduler.add_listener(self._on_event)

    def _on_event(self, event: JobEvent) -> None:
        if event.old is event.new or event.new is not JobState.SUBMITTED:
            return
        job = self.scheduler.get(event.key)
        if job is not None:
            mix = self._mix.setdefault(event.family, Counter())
            mix[latency_key_for(job.request)] += 1

    def counters(self) -> Counters | None:
        return None if self.scheduler is None else self.scheduler.counters()

    # -- figures --------------------------------------------------------------

    def latency(self, family: Family) -> float | None:
        """Expected seconds from create to done for the family's jobs: the
        scheduler's estimate (its poller's, learnt from every job polled to the
        end), averaged over the jobs created so far; None before it learnt any."""
        estimator: LatencyEstimator | None = (
            None if self.scheduler is None else self.scheduler.poller.estimator
        )
        mix = self._mix.get(family)
        if estimator is None or not mix or estimator.samples() == 0:
            return None
        total = sum(estimator.expected(key) * n for key, n in mix.items())
        return total / sum(mix.values())

    def eta(self, family: Family, counts: FamilyCounts) -> float | None:
        """Seconds left for the family from its limits and expected latency."""
        latency = self.latency(family)
        total = self.totals.get(family, 0)
        finished = counts.completed + counts.failed + counts.cancelled
        in_flight = counts.creating + counts.submitted
        to_create = max(total - finished - in_flight - counts.downloading, 0)
        if to_create + in_flight == 0:
            return 0.0
        if latency is None:
            return None
        fl = self.limits[family]
        waves = math.ceil((to_create + in_flight) / fl.concurrency)
        return max(waves * latency, to_create / fl.requests * fl.per_seconds + latency)

    def row(self, family: Family, counts: FamilyCounts) -> dict[str, str]:
        total = self.totals.get(family, 0)
        started = (
            counts.creating
            + counts.submitted
            + counts.downloading
            + counts.completed
            + counts.failed
            + counts.cancelled
        )
        elapsed = max(time.monotonic() - self.started, 1e-9)
        eta = self.eta(family, counts)
        return {
            "queued": str(max(total - started, 0)),
            "creating": str(counts.creating),
            "dreaming": str(counts.submitted),
            "downloading": str(counts.downloading),
            "done": str(counts.completed),
            "failed": str(counts.failed + counts.cancelled),
            "per_min": f"{counts.completed / elapsed * 60:.1f}",
            "eta": "-" if eta is None else format_duration(eta),
        }

    def families(self, counters: Counters) -> list[tuple[Family, FamilyCounts]]:
        return [
            (family, counters.families.get(family, FamilyCounts()))
            for family in Family
            if self.totals.get(family)
        ]

    # -- the summary ------------------------------------------------------------

    def summary(self, outcome: Any) -> None:
        out = self.console
        table = Table(title="lumasched run summary", title_justify="left")
        for name in ("family", "items", "completed", "failed", "not run", "avg latency"):
            table.add_column(name, justify="left" if name == "family" else "right")
        for family in Family:
            if not self.totals.get(family):
                continue
            counts = outcome.by_family.get(family, {})
            latency = outcome.latency.get(family)
            avg = format_duration(latency[0] / latency[1]) if latency and latency[1] else "-"
            table.add_row(
                family.value,
                str(self.totals[family]),
                str(counts.get("completed", 0)),
                str(counts.get("failed", 0)),
                str(counts.get("not run", 0)),
                avg,
            )
        out.print(table)
        counters: Counters | None = outcome.counters
        parts = [f"elapsed {format_duration(outcome.elapsed)}"]
        if counters is not None:
            parts += [
                f"creates {counters.creates}",
                f"429s {counters.rate_limited}",
                f"status polls {counters.polls}",
                f"downloaded {format_bytes(counters.bytes_downloaded)}",
            ]
        if outcome.spent_cents:
            parts.append(f"estimated spend ${outcome.spent_cents / 100:,.2f}")
        out.print(Text(", ".join(parts)))
        if self.out_dir is not None:
            out.print(Text(f"results: {self.out_dir / 'results.jsonl'}"))
        if outcome.gallery is not None:
            out.print(Text(f"gallery: {outcome.gallery} (open it in a browser)"))
        if outcome.failed:
            out.print(Text(f"{len(outcome.failed)} failed:"))
            for key, reason in outcome.failed:
                out.print(Text(f"  {key}: {reason}"))
        if outcome.not_run_total:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(outcome.not_run.items()))
            hint = "rerun with a higher --budget" if "budget" in outcome.not_run else "rerun"
            out.print(
                Text(
                    f"{outcome.not_run_total} not run ({reasons}): they stay in the journal; "
                    f"{hint} to continue"
                )
            )
        if outcome.interrupted:
            what = "terminated (SIGTERM)" if outcome.signal == "SIGTERM" else "interrupted"
            out.print(Text(f"{what}: run the same command again to resume"))


class LogDisplay(_Base):
    """Plain, timestamped lines: for logs, pipes and CI."""

    def __init__(
        self,
        *,
        limits: Limits,
        totals: dict[Family, int],
        file: IO[str] | None = None,
        interval: float = _STATUS_EVERY,
    ) -> None:
        console = Console(
            file=file or sys.stdout, highlight=False, markup=False, emoji=False, soft_wrap=True
        )
        super().__init__(limits=limits, totals=totals, console=console)
        self.interval = interval

    def _line(self, text: str) -> None:
        self.console.print(Text(f"{_stamp()} {text}"))

    def _on_event(self, event: JobEvent) -> None:
        super()._on_event(event)
        if event.old is event.new:
            return  # a server-side change (queued -> dreaming) within one job state
        if event.new is JobState.SUBMITTED and not event.info.get("resumed"):
            self._line(f"created     {event.key} ({event.family.value}) {event.generation_id}")
        elif event.info.get("resumed") and event.new in (JobState.SUBMITTED, JobState.CREATING):
            what = "polling" if event.new is JobState.SUBMITTED else "reconciling its create"
            self._line(f"resumed     {event.key} ({what} {event.generation_id or ''})".rstrip())

    def note(self, text: str) -> None:
        self._line(text)

    def item_done(self, job: Job, result: JobResult | None, reason: str | None) -> None:
        if result is not None:
            size = f", {format_bytes(result.bytes)}" if result.bytes is not None else ""
            where = result.path or result.generation.id
            self._line(f"completed   {job.key} -> {where}{size}")
        else:
            self._line(f"failed      {job.key}: {reason}")

    def status_line(self) -> str:
        counters = self.counters()
        if counters is None:
            return "starting"
        parts = []
        for family, counts in self.families(counters):
            r = self.row(family, counts)
            parts.append(
                f"{family.value}: {r['done']}/{self.totals[family]} done, {r['failed']} failed, "
                f"{r['queued']} queued, {r['creating']} creating, {r['dreaming']} dreaming, "
                f"{r['downloading']} downloading, eta {r['eta']}"
            )
        if counters.rate_limited:
            parts.append(f"429s {counters.rate_limited}")
        return "progress    " + " | ".join(parts)

    async def refresh_loop(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            self._line(self.status_line())

    def stop(self) -> None:
        pass


class LiveDisplay(_Base):
    """A live table per family, redrawn a few times a second (stdout is a terminal)."""

    def __init__(
        self, *, limits: Limits, totals: dict[Family, int], console: Console | None = None
    ) -> None:
        super().__init__(limits=limits, totals=totals, console=console or Console())
        self._notes: list[str] = []
        self._live: Live | None = None

    def render(self) -> Group:
        table = Table(box=None, pad_edge=False)
        columns = (
            "family",
            "queued",
            "creating",
            "dreaming",
            "downloading",
            "done",
            "failed",
            "done/min",
            "eta",
        )
        for name in columns:
            table.add_column(name, justify="left" if name == "family" else "right")
        counters = self.counters()
        footer = "starting..."
        if counters is not None:
            for family, counts in self.families(counters):
                r = self.row(family, counts)
                table.add_row(
                    family.value,
                    r["queued"],
                    r["creating"],
                    r["dreaming"],
                    r["downloading"],
                    f"[green]{r['done']}[/]",
                    f"[red]{r['failed']}[/]" if r["failed"] != "0" else "0",
                    r["per_min"],
                    r["eta"],
                )
            elapsed = format_duration(time.monotonic() - self.started)
            footer = f"elapsed {elapsed}  creates {counters.creates}  polls {counters.polls}"
            if counters.rate_limited:
                footer += f"  [yellow]429s {counters.rate_limited}[/]"
        parts: list[Any] = [table, Text.from_markup(footer)]
        parts += [Text(note, style="yellow") for note in self._notes[-3:]]
        return Group(*parts)

    def start(self, scheduler: Any, out_dir: Path) -> None:
        super().start(scheduler, out_dir)
        self._live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=1 / _LIVE_REFRESH,
            transient=False,
        )
        self._live.start()

    def note(self, text: str) -> None:
        if self._live is None:
            self.console.print(Text(text, style="yellow"))
        else:
            self._notes.append(text)

    def item_done(self, job: Job, result: JobResult | None, reason: str | None) -> None:
        if result is None:
            self.console.print(Text(f"failed {job.key}: {reason}", style="red"))

    async def refresh_loop(self) -> None:
        await anyio.sleep_forever()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def make_display(
    *, live: bool, limits: Limits, totals: dict[Family, int]
) -> LiveDisplay | LogDisplay:
    """The live display on a terminal, log lines otherwise."""
    if live:
        return LiveDisplay(limits=limits, totals=totals)
    return LogDisplay(limits=limits, totals=totals)
