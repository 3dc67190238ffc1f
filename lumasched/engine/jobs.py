"""Job handles: the live state of one request inside a ``Scheduler``.

A ``Job`` is what ``Scheduler.submit`` returns. Await it (or ``job.result()``)
for a ``JobResult``; a failure is a value on the job (``job.state`` is
``FAILED`` and ``job.error`` says why) that ``result()`` raises. State changes
follow one table (``TRANSITIONS``) and each one is published as a ``JobEvent``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from lumasched.api import Family
from lumasched.errors import JobCancelled, JobDeferred  # defined there; importable from here

if TYPE_CHECKING:
    from lumasched.api import CreateRequest, Generation

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "DoneFlag",
    "Job",
    "JobCancelled",
    "JobDeferred",
    "JobEvent",
    "JobResult",
    "JobState",
    "Timings",
]

logger = logging.getLogger("lumasched.engine.scheduler")


class JobState(enum.StrEnum):
    PENDING = "pending"
    """Known but not started (or parked: budget reached, creating stopped)."""
    WAITING = "waiting"
    """Waiting for the jobs it depends on."""
    QUEUED = "queued"
    """Ready; waiting for a concurrency slot and a create-rate token."""
    CREATING = "creating"
    """The create request is in flight (or its outcome is being reconciled)."""
    SUBMITTED = "submitted"
    """The server has the generation (queued or dreaming there)."""
    DOWNLOADING = "downloading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

_S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.PENDING: frozenset(
        {_S.WAITING, _S.QUEUED, _S.CREATING, _S.SUBMITTED, _S.DOWNLOADING, *TERMINAL_STATES}
    ),
    _S.WAITING: frozenset({_S.QUEUED, _S.PENDING, _S.FAILED, _S.CANCELLED}),
    _S.QUEUED: frozenset({_S.CREATING, _S.PENDING, _S.FAILED, _S.CANCELLED}),
    _S.CREATING: frozenset({_S.QUEUED, _S.SUBMITTED, _S.FAILED, _S.CANCELLED, _S.PENDING}),
    _S.SUBMITTED: frozenset({_S.DOWNLOADING, _S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.DOWNLOADING: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
"""Which state may follow which. ``PENDING`` may jump ahead when a job is
restored from the journal at the point it had reached."""


@attrs.frozen
class Timings:
    """Wall-clock times (UNIX seconds) a job reached each stage; ``None`` if not reached."""

    queued: float | None = None
    created: float | None = None
    completed: float | None = None
    downloaded: float | None = None


@attrs.frozen
class JobResult:
    """A finished job: its generation and, when the scheduler downloads, the file."""

    key: str
    generation: Generation
    path: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    timings: Timings = Timings()


@attrs.frozen
class JobEvent:
    """One state change of one job."""

    key: str
    old: JobState
    new: JobState
    at: float
    family: Family
    generation_id: str | None = None
    info: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Job:
    """The handle of one submitted request.

    ``await job`` returns its ``JobResult`` or raises its error
    (``GenerationFailed``, ``DependencyFailed``, ``JobCancelled``, ``JobDeferred``, ...).
    """

    key: str
    request: CreateRequest
    family: Family
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    state: JobState = JobState.PENDING
    generation_id: str | None = None
    error: BaseException | None = None
    reason: str | None = None
    """Why the job is where it is (e.g. ``"budget"`` for a parked job)."""
    attempts: int = 0
    seq: int = 0
    _result: JobResult | None = attrs.field(default=None, alias="_result")
    _done: anyio.Event = attrs.field(factory=anyio.Event, alias="_done")
    _cancel_requested: bool = attrs.field(default=False, alias="_cancel_requested")
    _canceller: Any = attrs.field(default=None, alias="_canceller", repr=False)
    _callbacks: list[Callable[[Job], object]] = attrs.field(
        factory=list, alias="_callbacks", repr=False
    )
    timings: Timings = Timings()

    @property
    def done(self) -> DoneFlag:
        """``job.done()``: True once ``result()`` would return or raise without
        waiting, as on an asyncio future. (Also truthy itself, so 0.1's
        ``if job.done:`` keeps working.)"""
        return _DONE if self._done.is_set() else _NOT_DONE

    def cancelled(self) -> bool:
        """True if the job ended cancelled (``result()`` raises ``JobCancelled``)."""
        return self.state is JobState.CANCELLED

    def exception(self) -> BaseException | None:
        """The error the job ended with, None if it completed; like an asyncio
        future's, raises ``InvalidStateError`` while the job is not done."""
        if not self._done.is_set():
            raise asyncio.InvalidStateError(f"job {self.key!r} is not done yet")
        return self.error

    def add_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Call ``callback(job)`` once the job is done (at once if it is), in the
        scheduler's thread. A callback that raises is logged, never propagated."""
        self._add_done_callback(callback)

    def remove_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Forget ``callback`` if it has not been called yet."""
        self._remove_done_callback(callback)

    async def result(self) -> JobResult:
        """Wait for the job; return its result or raise its error."""
        await self._done.wait()
        if self.error is not None:
            raise self.error
        assert self._result is not None
        return self._result

    def __await__(self) -> Generator[Any, None, JobResult]:
        return self.result().__await__()

    def cancel(self) -> bool:
        """Ask to cancel. Returns False if the job had already finished.

        A job not yet created is cancelled at once. A job whose create is in
        flight, or whose generation is on the server, is marked cancelled (its
        result raises ``JobCancelled``); the scheduler still follows that
        generation to its end, without downloading, so its concurrency slot is
        released only when the server frees it.
        """
        if self.done:
            return False
        self._cancel_requested = True
        if self._canceller is not None:
            self._canceller(self)
        return True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    # Scheduler-side mutation: every change goes through these.

    def _move(self, new: JobState) -> JobState:
        old = self.state
        if new is old:
            return old
        if new not in TRANSITIONS[old]:
            raise RuntimeError(f"job {self.key!r}: illegal transition {old} -> {new}")
        self.state = new
        return old

    def _finish(self, result: JobResult | None, error: BaseException | None) -> None:
        self._result = result
        self.error = error
        self._done.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, self)

    def _add_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Call ``callback(job)`` once the job is done (at once if it is). A callback
        that raises is logged: it must not break the scheduler finishing jobs."""
        if self.done:
            _call(callback, self)
        else:
            self._callbacks.append(callback)

    def _remove_done_callback(self, callback: Callable[[Job], object]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)


class DoneFlag:
    """What ``Job.done`` is: call it (``job.done()``, as on an asyncio future) for
    a bool; it is also truthy itself, so 0.1's ``if job.done:`` still works."""

    __slots__ = ("_value",)

    def __init__(self, value: bool) -> None:
        self._value = value

    def __call__(self) -> bool:
        return self._value

    def __bool__(self) -> bool:
        return self._value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DoneFlag | bool):
            return self._value == bool(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return repr(self._value)


_DONE = DoneFlag(True)
_NOT_DONE = DoneFlag(False)


def _call(callback: Callable[[Job], object], job: Job) -> None:
    try:
        callback(job)
    except Exception:
        logger.exception("done callback %r of job %r failed", callback, job.key)
