"""Generations, their lifecycle, the account's limits and credits.

No task runs per job: a generation's state is a function of the time (its
``Timeline``), and the side effects of a job ending (a concurrency slot freed,
a refund) are applied by ``Store.settle(now)``, which every request calls
first. Only callbacks need timers (``_callbacks.py``). With a state file
(``_persist.py``), every create and delete is written before it is answered.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from lumasched.api import Family
from lumasched.emulator._config import EmulatorConfig
from lumasched.emulator._echo import echo_request, response_generation_type
from lumasched.emulator._failures import pick_failure
from lumasched.emulator._stats import Inspector, _Window
from lumasched.emulator._validate import ApiError, CreateSpec

if TYPE_CHECKING:
    from lumasched.emulator._persist import StateFile

__all__ = ["Record", "SlotJob", "Store", "Timeline", "format_retry_after"]

# (queued, dreaming) seconds at 720p and 5 s; rough figures for the real service.
BASE_LATENCY: Mapping[str, tuple[float, float]] = {
    "ray-2": (8.0, 90.0),
    "ray-1-6": (8.0, 60.0),
    "ray-flash-2": (4.0, 30.0),
    "photon-1": (2.0, 12.0),
    "photon-flash-1": (1.0, 5.0),
}
RESOLUTION_FACTOR: Mapping[str, float] = {"540p": 0.75, "720p": 1.0, "1080p": 1.6, "4k": 3.0}
UPSCALE_DREAMING = 40.0
AUDIO_DREAMING = 20.0
FIXED_QUEUED_SHARE = 0.2


@attrs.frozen
class Timeline:
    """One job's schedule, on the ``time.monotonic`` clock."""

    created: float
    dreaming_at: float
    done_at: float
    failure_reason: str | None
    """None: ends completed; otherwise ends failed with this reason."""

    def state_at(self, now: float) -> str:
        if now >= self.done_at:
            return "failed" if self.failure_reason else "completed"
        if now >= self.dreaming_at:
            return "dreaming"
        return "queued"

    @property
    def events(self) -> list[tuple[float, str]]:
        """The states a callback announces, with their times."""
        final = "failed" if self.failure_reason else "completed"
        if self.dreaming_at < self.done_at:
            return [(self.dreaming_at, "dreaming"), (self.done_at, final)]
        return [(self.done_at, final)]


@attrs.define(eq=False)
class Record:
    """One generation as the emulator stores it."""

    id: str
    seq: int
    kind: str
    spec: CreateSpec
    body: dict[str, Any]
    created_wall: float
    timeline: Timeline
    version: int = 0
    """Bumped when the same-id upscale/audio mode restarts the generation."""
    deleted: bool = False

    @property
    def media(self) -> str:
        return self.spec.media

    @property
    def aspect_ratio(self) -> str:
        return self.spec.aspect_ratio

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def callback_url(self) -> str | None:
        url = self.body.get("callback_url")
        return url if isinstance(url, str) else None

    def state_at(self, now: float) -> str:
        return self.timeline.state_at(now)

    def state_now(self) -> str:
        return self.timeline.state_at(time.monotonic())

    def created_at_iso(self) -> str:
        seconds = math.floor(self.created_wall)
        millis = int((self.created_wall - seconds) * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{stamp}.{millis:03d}Z"

    def to_json(
        self, now: float, assets: Callable[[Record], dict[str, str | None]]
    ) -> dict[str, Any]:
        state = self.state_at(now)
        return {
            "id": self.id,
            "generation_type": response_generation_type(self.kind),
            "state": state,
            "failure_reason": self.timeline.failure_reason if state == "failed" else None,
            "created_at": self.created_at_iso(),
            "assets": assets(self) if state == "completed" else None,
            "model": self.model,
            "request": echo_request(self.spec, self.body),
        }


@attrs.frozen(order=True)
class SlotJob:
    """A slot held from create until ``done_at``; heap-ordered by end time.
    Also the create's place in the rate window (``created``), its charge and,
    for the duplicate counter, the request's fingerprint."""

    done_at: float
    seq: int
    family: Family = attrs.field(order=False)
    cost_cents: float = attrs.field(order=False)
    failed: bool = attrs.field(order=False)
    created: float = attrs.field(order=False)
    fingerprint: str = attrs.field(order=False, default="")


def format_retry_after(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (RFC 9110 delay-seconds: digits only,
    rounded up, at least 1) and the exact wait in ``Retry-After-ms``, which the
    official SDK reads first."""
    seconds = max(seconds, 0.001)
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "Retry-After-ms": str(math.ceil(seconds * 1000)),
    }


class Store:
    """All generations plus the account: limits, in-flight jobs, credits."""

    def __init__(
        self,
        config: EmulatorConfig,
        rng: random.Random,
        inspector: Inspector,
        *,
        state_file: StateFile | None = None,
    ):
        self.config = config
        self.rng = rng
        self.inspect = inspector
        self.state_file = state_file
        self.records: dict[str, Record] = {}
        self._seq = 0
        self._jobs: list[SlotJob] = []
        self.in_flight: dict[Family, int] = {f: 0 for f in Family}
        self._windows = {f: _Window(config.limits[f].per_seconds) for f in Family}
        self.balance_cents = config.credit_balance_cents
        self.spent_cents = 0.0
        """Charged this calendar month (UTC), refunds deducted: what the usage cap limits."""
        self._month = time.gmtime()[:2]
        words = "|".join(re.escape(w) for w in config.blacklist if w)
        self._blacklist = re.compile(rf"\b(?:{words})\b", re.IGNORECASE) if words else None

    # -- time ------------------------------------------------------------------
    def settle(self, now: float) -> None:
        """Apply the effects of every job that ended by ``now``."""
        while self._jobs and self._jobs[0].done_at <= now:
            job = heapq.heappop(self._jobs)
            self.in_flight[job.family] -= 1
            if job.failed:
                self.balance_cents += job.cost_cents
                self.spent_cents -= job.cost_cents
        for family in Family:
            self.inspect.families[family].in_flight = self.in_flight[family]

    # -- lookups ---------------------------------------------------------------
    def get(self, gen_id: str) -> Record | None:
        record = self.records.get(gen_id)
        return None if record is None or record.deleted else record

    def page(self, limit: int, offset: int) -> tuple[list[Record], bool]:
        live = [r for r in reversed(self.records.values()) if not r.deleted]
        return live[offset : offset + limit], offset + limit < len(live)

    def delete(self, gen_id: str) -> bool:
        """Forget a generation. A running job keeps its slot until it would have
        ended: whether the real service cancels on delete is unverified."""
        record = self.get(gen_id)
        if record is None:
            return False
        record.deleted = True
        if self.state_file is not None:
            self.state_file.save_delete(gen_id)
        return True

    def restore(
        self,
        records: Iterable[Record],
        jobs: Iterable[SlotJob],
        now: float,
        *,
        balance_cents: float,
    ) -> None:
        """Take back what a state file kept: generations (oldest first), the
        balance before any charge, and every job's slot, charge and rate-window
        place. Jobs that ended while the emulator was down are settled (failed
        ones refunded) at once."""
        self.balance_cents = balance_cents
        for record in records:
            self.records[record.id] = record
        for job in sorted(jobs, key=lambda j: j.created):
            self._book(job)
            self.inspect.note_existing(job.fingerprint)
        self.settle(now)
        for family in Family:
            stats = self.inspect.families[family]
            stats.peak_concurrency = max(stats.peak_concurrency, self.in_flight[family])

    # -- limits ----------------------------------------------------------------
    def admit(self, family: Family, now: float) -> None:
        """Count an arriving create; raise a 429 ``ApiError`` when over a limit."""
        limits = self.config.limits[family]
        stats = self.inspect.families[family]
        stats.note_arrival(now)
        window = self._windows[family]
        if window.count_at(now) >= limits.requests:
            stats.note_rate_limited("rate")
            raise ApiError(
                429,
                f"Rate limit exceeded: at most {limits.requests} create requests per "
                f"{limits.per_seconds:g} seconds for {family.value} generations",
                format_retry_after(window.times[0] + limits.per_seconds - now),
            )
        if self.in_flight[family] >= limits.concurrency:
            stats.note_rate_limited("concurrency")
            first_end = min(j.done_at for j in self._jobs if j.family is family)
            raise ApiError(
                429,
                f"Too many concurrent generations: at most {limits.concurrency} "
                f"{family.value} generations can run at once",
                format_retry_after(first_end - now),
            )

    # -- the lifecycle -----------------------------------------------------------
    def _latency(self, spec: CreateSpec) -> tuple[float, float]:
        config = self.config
        if config.fixed_latency is not None:
            total = config.fixed_latency
            return total * FIXED_QUEUED_SHARE, total * (1 - FIXED_QUEUED_SHARE)
        queued, dreaming = BASE_LATENCY.get(spec.model, BASE_LATENCY["ray-2"])
        if spec.kind == "upscale":
            dreaming = UPSCALE_DREAMING * RESOLUTION_FACTOR[spec.resolution]
        elif spec.kind == "audio":
            dreaming = AUDIO_DREAMING
        elif spec.media == "video":
            seconds = float(spec.duration.removesuffix("s"))
            dreaming *= RESOLUTION_FACTOR[spec.resolution] * seconds / 5.0

        def jittered(seconds: float) -> float:
            factor = 1.0 + self.rng.uniform(-config.jitter, config.jitter)
            return seconds * factor / config.speed

        return jittered(queued), jittered(dreaming)

    def _failure(self, spec: CreateSpec) -> tuple[str | None, bool]:
        """(failure reason or None, whether it fails before dreaming)."""
        rates = dict(self.config.failure_rates)
        if self.config.failure_rate:
            rates["job_failed"] = max(rates.get("job_failed", 0.0), self.config.failure_rate)
        failure = pick_failure(
            spec.prompt,
            spec.input_urls,
            rates,
            self.rng,
            self._blacklist,
            inputs_unreadable=spec.inputs_unreadable,
        )
        return (None, False) if failure is None else (failure.reason, failure.early)

    def _afford(self, cost_cents: float) -> None:
        """402 when the balance cannot cover ``cost_cents`` or it would take this
        month's usage past the cap. The real status and wording are undocumented:
        402 is what the SDK leaves unretried, and what Luma's newer APIs answer."""
        if cost_cents > self.balance_cents + 1e-9:
            raise ApiError(
                402,
                f"Insufficient credits: this generation costs ${cost_cents / 100:,.2f}, "
                f"the balance is ${self.balance_cents / 100:,.2f}",
            )
        cap = self.config.monthly_usage_cap_cents
        month = time.gmtime()[:2]
        if month != self._month:
            self._month, self.spent_cents = month, 0.0
        if cap is not None and self.spent_cents + cost_cents > cap + 1e-9:
            raise ApiError(
                402,
                f"Monthly usage limit reached: ${cap / 100:,.2f} per month, "
                f"${self.spent_cents / 100:,.2f} used, this generation costs "
                f"${cost_cents / 100:,.2f}",
            )

    def _book(self, job: SlotJob) -> None:
        """Charge a job, hold its slot until it ends, count it in the rate window."""
        self.balance_cents -= job.cost_cents
        self.spent_cents += job.cost_cents
        self._seq = max(self._seq, job.seq)
        heapq.heappush(self._jobs, job)
        self.in_flight[job.family] += 1
        self._windows[job.family].add(job.created)

    def _start(
        self, spec: CreateSpec, body: Mapping[str, Any], now: float, fingerprint: str
    ) -> tuple[Timeline, SlotJob]:
        priced: Mapping[str, Any] = {**body, "model": spec.model}
        if spec.kind == "upscale":  # priced on the source's shape, which the body lacks
            priced = {**body, "aspect_ratio": spec.aspect_ratio, "duration": spec.duration}
        elif spec.kind == "audio":
            priced = body
        cost = self.config.prices.cost_usd(spec.kind, priced) * 100.0
        self._afford(cost)
        queued, dreaming = self._latency(spec)
        reason, early = self._failure(spec)
        dreaming_at = now + queued
        done_at = dreaming_at if early else dreaming_at + dreaming
        job = SlotJob(
            done_at,
            self._seq + 1,
            spec.family,
            cost,
            failed=reason is not None,
            created=now,
            fingerprint=fingerprint,
        )
        self._book(job)
        self.inspect.families[spec.family].note_create(now, self.in_flight[spec.family])
        return Timeline(now, dreaming_at, done_at, reason), job

    def new_id(self) -> str:
        # A seeded emulator restarted on a state file replays the same ids.
        while True:
            gen_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            if gen_id not in self.records:
                return gen_id

    def create(
        self, spec: CreateSpec, body: dict[str, Any], now: float, fingerprint: str = ""
    ) -> Record:
        """Start a job for an admitted, valid request; return its generation.
        With a state file, the generation is on disk when this returns."""
        timeline, job = self._start(spec, body, now, fingerprint)
        if spec.source_id is not None and not self.config.derived_new_id:
            record = self.records[spec.source_id]
            record.timeline = timeline
            record.version += 1
        else:
            record = Record(
                id=self.new_id(),
                seq=self._seq,
                kind=spec.kind,
                spec=spec,
                body=body,
                created_wall=time.time(),
                timeline=timeline,
            )
            self.records[record.id] = record
        if self.state_file is not None:
            self.state_file.save_create(record, job)
        return record
