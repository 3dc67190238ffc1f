"""What a client did to the emulator: the figures tests assert on (``emu.inspect``)."""

from __future__ import annotations

import collections
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import attrs

from lumasched.api import Family

__all__ = ["FamilyStats", "Inspector"]


class _Window:
    """Arrival times in a sliding window ``(t - width, t]``, and the peak count seen."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.times: collections.deque[float] = collections.deque()
        self.peak = 0

    def count_at(self, now: float) -> int:
        while self.times and self.times[0] <= now - self.width:
            self.times.popleft()
        return len(self.times)

    def add(self, now: float) -> None:
        self.count_at(now)
        self.times.append(now)
        self.peak = max(self.peak, len(self.times))


@attrs.define
class FamilyStats:
    """Figures for one model family (``video`` or ``image``)."""

    family: Family
    window_seconds: float
    creates: int = 0
    """Creates accepted (a generation was made)."""
    arrivals: int = 0
    """Create requests that reached the limits check (accepted or answered 429)."""
    in_flight: int = 0
    """Generations accepted and not yet terminal."""
    peak_concurrency: int = 0
    rate_limited: dict[str, int] = attrs.field(factory=dict)
    """429 answers by reason: ``rate``, ``concurrency``, ``fault``."""
    _arrival_window: _Window = attrs.field(init=False, repr=False)
    _create_window: _Window = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._arrival_window = _Window(self.window_seconds)
        self._create_window = _Window(self.window_seconds)

    @property
    def peak_window_arrivals(self) -> int:
        """Most create requests (incl. 429'd) in any window of ``per_seconds``."""
        return self._arrival_window.peak

    @property
    def peak_window_creates(self) -> int:
        """Most accepted creates in any window of ``per_seconds``."""
        return self._create_window.peak

    @property
    def rate_limited_total(self) -> int:
        return sum(self.rate_limited.values())

    def note_arrival(self, now: float) -> None:
        self.arrivals += 1
        self._arrival_window.add(now)

    def note_create(self, now: float, in_flight: int) -> None:
        self.creates += 1
        self._create_window.add(now)
        self.in_flight = in_flight
        self.peak_concurrency = max(self.peak_concurrency, in_flight)

    def note_rate_limited(self, reason: str) -> None:
        self.rate_limited[reason] = self.rate_limited.get(reason, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "creates": self.creates,
            "arrivals": self.arrivals,
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "peak_window_arrivals": self.peak_window_arrivals,
            "peak_window_creates": self.peak_window_creates,
            "window_seconds": self.window_seconds,
            "rate_limited": dict(self.rate_limited),
            "rate_limited_total": self.rate_limited_total,
        }


def body_fingerprint(kind: str, path_id: str | None, body: Mapping[str, Any]) -> str:
    canonical = json.dumps([kind, path_id, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@attrs.define
class Inspector:
    """Live counters of everything a client did. ``emu.inspect`` is one;
    ``emu.reset_stats()`` starts a fresh one. ``to_json()`` is what
    ``GET /_emulator/stats`` answers."""

    families: dict[Family, FamilyStats]
    creates_by_kind: dict[str, int] = attrs.field(factory=dict)
    requests_by_route: dict[str, int] = attrs.field(factory=dict)
    responses_by_status: dict[int, int] = attrs.field(factory=dict)
    gets: int = 0
    lists: int = 0
    deletes: int = 0
    unauthorized: int = 0
    downloads_started: int = 0
    downloads_completed: int = 0
    downloads_cut: int = 0
    download_bytes: int = 0
    expired_url_hits: int = 0
    callbacks_sent: int = 0
    """Callback POST attempts (retries included)."""
    callbacks_delivered: int = 0
    callbacks_retried: int = 0
    callbacks_failed: int = 0
    """Callbacks given up on after every attempt failed."""
    callbacks_duplicated: int = 0
    """Deliveries repeated on purpose (``callback_duplicates``)."""
    callbacks_reordered: int = 0
    """Generations whose callbacks were sent out of order (``callback_reorder``)."""
    faults_injected: dict[str, int] = attrs.field(factory=dict)
    first_create_at: float | None = None
    """Wall-clock time (``time.time()``) the first accepted create arrived: with
    ``last_create_at`` and ``last_download_at``, where a client's makespan went,
    on the server's clock (``benchmarks/makespan.py``)."""
    last_create_at: float | None = None
    last_download_at: float | None = None
    """When the last complete asset download ended."""
    _bodies: dict[str, int] = attrs.field(factory=dict, repr=False)

    @classmethod
    def for_windows(cls, windows: Mapping[Family, float]) -> Inspector:
        return cls(families={f: FamilyStats(f, windows[f]) for f in Family})

    @property
    def creates_total(self) -> int:
        return sum(self.creates_by_kind.values())

    @property
    def rate_limited_total(self) -> int:
        return sum(s.rate_limited_total for s in self.families.values())

    @property
    def polls(self) -> int:
        """GETs of one generation plus list calls."""
        return self.gets + self.lists

    @property
    def duplicate_creates(self) -> int:
        """Creates whose request (kind, path id, body) equals an earlier accepted one."""
        return sum(n - 1 for n in self._bodies.values() if n > 1)

    @property
    def duplicate_bodies(self) -> dict[str, int]:
        """Fingerprint -> times created, for requests created more than once."""
        return {k: n for k, n in self._bodies.items() if n > 1}

    def count(self, table: dict[Any, int], key: Any) -> None:
        table[key] = table.get(key, 0) + 1

    def note_create(self, kind: str, fingerprint: str) -> None:
        self.count(self.creates_by_kind, kind)
        self.count(self._bodies, fingerprint)
        self.last_create_at = time.time()
        if self.first_create_at is None:
            self.first_create_at = self.last_create_at

    def note_download(self) -> None:
        self.downloads_completed += 1
        self.last_download_at = time.time()

    def note_existing(self, fingerprint: str) -> None:
        """Remember a create from before a restart (state file), so that
        repeating it counts as a duplicate; it is not counted as a create."""
        if fingerprint:
            self.count(self._bodies, fingerprint)

    def to_json(self) -> dict[str, Any]:
        return {
            "creates_total": self.creates_total,
            "creates_by_kind": dict(self.creates_by_kind),
            "families": {f.value: s.to_json() for f, s in self.families.items()},
            "rate_limited_total": self.rate_limited_total,
            "requests_by_route": dict(self.requests_by_route),
            "responses_by_status": {str(k): v for k, v in self.responses_by_status.items()},
            "gets": self.gets,
            "lists": self.lists,
            "polls": self.polls,
            "deletes": self.deletes,
            "unauthorized": self.unauthorized,
            "downloads_started": self.downloads_started,
            "downloads_completed": self.downloads_completed,
            "downloads_cut": self.downloads_cut,
            "download_bytes": self.download_bytes,
            "expired_url_hits": self.expired_url_hits,
            "callbacks_sent": self.callbacks_sent,
            "callbacks_delivered": self.callbacks_delivered,
            "callbacks_retried": self.callbacks_retried,
            "callbacks_failed": self.callbacks_failed,
            "callbacks_duplicated": self.callbacks_duplicated,
            "callbacks_reordered": self.callbacks_reordered,
            "faults_injected": dict(self.faults_injected),
            "duplicate_creates": self.duplicate_creates,
            "duplicate_bodies": self.duplicate_bodies,
            "first_create_at": self.first_create_at,
            "last_create_at": self.last_create_at,
            "last_download_at": self.last_download_at,
        }
