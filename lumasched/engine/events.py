"""Job events and counters: what a progress display or a web app reads.

Every job state change becomes a ``JobEvent``, delivered to sync listeners
(called in the scheduler's task, so keep them quick) and to async subscribers
(bounded memory streams: a subscriber that falls more than ``buffer`` events
behind loses the overflow, counted in ``Counters.events_dropped``, rather than
stalling the scheduler).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from lumasched.api import Family
from lumasched.engine.jobs import JobEvent, JobState

__all__ = ["Counters", "EventHub", "FamilyCounts", "Listener"]

logger = logging.getLogger("lumasched")

Listener = Callable[[JobEvent], None]


@attrs.frozen
class FamilyCounts:
    """How many of a family's jobs are in each stage right now."""

    pending: int = 0
    waiting: int = 0
    queued: int = 0
    creating: int = 0
    submitted: int = 0
    downloading: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def in_flight(self) -> int:
        """Generations on the server (created, not yet terminal there)."""
        return self.submitted


@attrs.frozen
class Counters:
    """A snapshot of the scheduler's counters."""

    creates: int
    """Creates the server accepted (plus generations adopted by reconcile)."""
    create_attempts: int
    rate_limited: int
    """429 answers to creates (each re-queued, never a failure)."""
    ambiguous_creates: int
    reconciles: int
    """List-endpoint reconcile passes run."""
    reconciled_found: int
    """Ambiguous creates whose generation reconcile found (adopted, not re-created)."""
    polls: int
    """Status requests made by the poll loop (from the poller's own statistics)."""
    downloads: int
    bytes_downloaded: int
    events_dropped: int
    families: dict[Family, FamilyCounts]


class EventHub:
    """Fan-out of job events to listeners and subscribers; per-family state counts."""

    def __init__(self, *, buffer: int = 10_000) -> None:
        self._buffer = buffer
        self._listeners: list[Listener] = []
        self._streams: list[MemoryObjectSendStream[JobEvent]] = []
        self.counts: dict[Family, Counter[JobState]] = {f: Counter() for f in Family}
        self.dropped = 0

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` on every event; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def subscribe(self, buffer: int | None = None) -> MemoryObjectReceiveStream[JobEvent]:
        """A stream of the events from now on, up to ``buffer`` unread (0: unbounded;
        past it, new events are dropped and counted); it ends when the scheduler closes."""
        size = self._buffer if buffer is None else buffer
        send, receive = anyio.create_memory_object_stream[JobEvent](math.inf if size <= 0 else size)
        self._streams.append(send)
        return receive

    def count_new(self, family: Family, state: JobState) -> None:
        self.counts[family][state] += 1

    @property
    def listened(self) -> bool:
        """Whether any listener or subscriber would receive an event."""
        return bool(self._listeners or self._streams)

    def count(self, family: Family, old: JobState, new: JobState) -> None:
        """Count a state change without publishing it."""
        if old is not new:
            counts = self.counts[family]
            counts[old] -= 1
            counts[new] += 1

    def publish(self, event: JobEvent) -> None:
        self.count(event.family, event.old, event.new)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed", listener)
        for stream in list(self._streams):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._streams.remove(stream)
                stream.close()

    def family_counts(self) -> dict[Family, FamilyCounts]:
        return {
            family: FamilyCounts(**{state.value: max(0, n) for state, n in counts.items()})
            for family, counts in self.counts.items()
        }

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams.clear()
