"""The scheduler's jobs: their states, what each waits for, and the ready queues.

Every state change of a job goes through ``JobTable``, which publishes it as a
``JobEvent``; so does every job's end, which releases the jobs waiting for it
and, for the last unfinished one, wakes ``join()``. Jobs whose dependencies are
met wait in one priority queue per family (higher priority first, FIFO within
a priority) for that family's dispatcher (``lumasched.engine._creating``).

A job that has ended (completed, failed, cancelled) is dropped from the table
once nothing here can need it: no unfinished job depends on it, it holds no
concurrency slot, and its end is committed to the journal. The caller's handle
stays valid; the journal (when there is one) still answers for the key. So a
long-lived scheduler's memory follows its unfinished jobs, not its history.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import anyio
import attrs

from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched.api import CreateRequest, Family, family_of, generation_refs, request_to_dict
from lumasched.api._models import REF_PREFIX
from lumasched.engine.events import EventHub
from lumasched.engine.jobs import (
    TERMINAL_STATES,
    Job,
    JobCancelled,
    JobDeferred,
    JobEvent,
    JobResult,
)
from lumasched.engine.jobs import JobState as S
from lumasched.errors import DependencyFailed, LumaError
from lumasched.store._writes import JournalWriter
from lumasched.store.journal import NewJob

__all__ = ["REF_PREFIX", "JobTable"]

logger = logging.getLogger("lumasched.engine.scheduler")

_REASON_LIMIT = 4000
"""Characters of a failure reason kept in the journal."""


class JobTable:
    """Every job a scheduler knows, and the one place their states change.

    ``from_journal(key)`` gives the job ``key`` of the journal that a new job
    depends on (``None`` if the journal has no such job). ``owner_memory``:
    without a journal, how many seconds a released job's generation id is still
    known as taken (for reconcile: see ``owner_of``).
    """

    def __init__(
        self,
        events: EventHub,
        writes: JournalWriter,
        *,
        from_journal: Callable[[str], Job | None],
        owner_memory: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.events = events
        self._clock = clock
        self._writes = writes
        self._from_journal = from_journal
        self.jobs: dict[str, Job] = {}
        """the jobs not yet released (see the module docstring)"""
        self.generation_owners: dict[str, str] = {}
        """generation id -> key of the job it belongs to, for the jobs in ``jobs``"""
        self._released_owners: dict[str, tuple[str, float]] = {}
        """without a journal: generation id -> (key, when released) of released jobs"""
        self._owner_memory = owner_memory
        self.holds_slot: Callable[[str], bool] = lambda key: False
        """Whether the job ``key`` holds a concurrency slot (set by the scheduler)."""
        self._holds: dict[str, int] = {}
        """key -> how many unfinished jobs depend on it"""
        self._holding: dict[str, tuple[str, ...]] = {}
        """key of an unfinished job -> the keys it holds (its dependencies)"""
        self._unmet: dict[str, int] = {}
        """key of a waiting job -> how many of its dependencies have not completed"""
        self.unfinished = 0
        self.stopped_reason: str | None = None
        """Why creating stopped (``"stopped"``, ``"budget"``, ``"shutdown"``,
        ``"key rejected"``, ``"unreachable"``), if it did."""
        self.halted: LumaError | None = None
        """The error that stopped creating for the session (a rejected key, an
        unreachable API): every job parked since raises it."""
        self._seq = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._dependents: dict[str, list[Job]] = {}
        self._queues: dict[Family, list[tuple[int, int, Job]]] = {f: [] for f in Family}
        self._wakeups: dict[Family, anyio.Event] = {f: anyio.Event() for f in Family}

    # -- new jobs and their dependencies -----------------------------------------------

    def new_job(
        self, key: str, request: CreateRequest, priority: int, depends_on: tuple[str, ...]
    ) -> Job:
        self._seq += 1
        job = Job(
            key=key,
            request=request,
            family=family_of(request.kind, request.model),
            priority=priority,
            depends_on=depends_on,
            seq=self._seq,
        )
        job._canceller = self.cancel
        self.jobs[key] = job
        self.unfinished += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
        self.events.count_new(job.family, S.PENDING)
        return job

    def start(
        self,
        request: CreateRequest,
        *,
        key: str,
        priority: int,
        depends_on: Iterable[Job | str],
        record: bool = True,
    ) -> Job:
        """A job never sent before: queued once what it depends on has completed."""
        deps = [d if isinstance(d, str) else d.key for d in depends_on]
        deps += [r[len(REF_PREFIX) :] for r in generation_refs(request) if r.startswith(REF_PREFIX)]
        job = self.new_job(key, request, priority, tuple(dict.fromkeys(deps)))
        if job.depends_on:
            # Held from now on: a dependency stays in the table until this job ends.
            self._holding[key] = job.depends_on
            for dep_key in job.depends_on:
                self._holds[dep_key] = self._holds.get(dep_key, 0) + 1
        if record and self._writes.journal is not None:
            self._writes.add_soon(
                NewJob(
                    key=job.key,
                    kind=job.request.kind,
                    request=request_to_dict(job.request),
                    family=job.family.value,
                    priority=job.priority,
                    depends_on=job.depends_on,
                    queued_at=time.time(),
                )
            )
        # The handle of an ended job stands for it even once the table released it.
        ended = {d.key: d for d in depends_on if isinstance(d, Job) and d.done}
        self._after_deps_known(job, ended)
        return job

    def _after_deps_known(self, job: Job, handles: dict[str, Job]) -> None:
        unmet = []
        for dep_key in job.depends_on:
            dep = self.jobs.get(dep_key) or handles.get(dep_key)
            if dep is None:
                # Finished in an earlier run (or not re-submitted yet): pick it up.
                dep = self._from_journal(dep_key)
            if dep is None:
                self.fail(job, DependencyFailed(job.key, dep_key, "was never submitted"))
                return
            if dep.done and self._parked(dep):
                # Not the dependency's fault, nor this job's: both wait for a later run.
                self.defer(job, self.stopped_reason or "stopped")
                return
            if dep.done and dep.state is not S.COMPLETED:
                self._fail_dependency(job, dep)
                return
            if not dep.done:
                unmet.append(dep)
        if unmet:
            self.set_state(job, S.WAITING, waiting_for=[d.key for d in unmet])
            self._unmet[job.key] = len(unmet)
            for dep in unmet:
                self._dependents.setdefault(dep.key, []).append(job)
        else:
            self.enqueue(job)

    def _fail_dependency(self, job: Job, dep: Job) -> None:
        if dep.state is S.CANCELLED:
            why = "was cancelled"
        elif isinstance(dep.error, JobDeferred):
            why = f"was deferred ({dep.error.reason})"
        else:
            why = f"failed: {dep.error}"
        self.fail(job, DependencyFailed(job.key, dep.key, why))

    def _on_dependency_done(self, dep: Job) -> None:
        for job in self._dependents.pop(dep.key, []):
            if job.done:
                continue
            if dep.state is not S.COMPLETED or dep.error is not None:
                if self._parked(dep):
                    self.defer(job, self.stopped_reason or "stopped")
                else:
                    self._fail_dependency(job, dep)
                continue
            unmet = self._unmet.pop(job.key, 1) - 1
            if unmet:
                self._unmet[job.key] = unmet
            else:
                self.enqueue(job)

    # -- the ready queues ------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        if self.stopped_reason is not None:
            self.defer(job, self.stopped_reason)
            return
        self.set_state(job, S.QUEUED)
        if job.timings.queued is None:
            job.timings = attrs.evolve(job.timings, queued=time.time())
        self._push(job)

    def requeue(self, job: Job, reason: str) -> None:
        """A job whose create surely did not happen: queued again (``reason`` says why)."""
        job.reason = reason
        self.set_state(job, S.QUEUED, reason=reason)
        if self.stopped_reason is not None:
            self.defer(job, self.stopped_reason)
            return
        self._push(job)

    def _push(self, job: Job) -> None:
        heapq.heappush(self._queues[job.family], (-job.priority, job.seq, job))
        self._wake(job.family)

    async def wait_ready(self, family: Family) -> None:
        """Until ``family`` has a queued job and creating has not stopped."""
        queue = self._queues[family]
        while not queue or self.stopped_reason is not None:
            await self._wakeups[family].wait()

    def pop(self, family: Family) -> Job | None:
        """The next job to create, skipping entries of jobs that left the queue."""
        queue = self._queues[family]
        while queue:
            _, _, job = heapq.heappop(queue)
            if job.state is S.QUEUED and not job.done:
                return job
        return None

    def _wake(self, family: Family) -> None:
        event = self._wakeups[family]
        event.set()
        self._wakeups[family] = anyio.Event()

    def stop(self, reason: str) -> None:
        """Create nothing more: queued and waiting jobs are deferred."""
        if self.stopped_reason is None:
            self.stopped_reason = reason
            logger.info("creating stopped (%s)", reason)
        for queue in self._queues.values():
            while queue:
                _, _, job = heapq.heappop(queue)
                if job.state is S.QUEUED:
                    self.defer(job, reason)
        # A snapshot: deferring a waiting job releases (and pops) its own dependents.
        for waiters in list(self._dependents.values()):
            for job in list(waiters):
                if not job.done and job.state is S.WAITING:
                    self.defer(job, reason)
        for family in Family:
            self._wake(family)

    def halt(self, error: LumaError, reason: str) -> None:
        """Create nothing more in this session because of ``error``; every job not
        created, and every generation being followed, is parked (the journal keeps
        each where it is) and its handle raises ``error``. Creates in flight end
        on their own answers."""
        if self.halted is None:
            self.halted = error
        self.stopped_reason = reason
        self.stop(reason)
        for job in list(self.jobs.values()):
            if not job.done and job.state is S.SUBMITTED:
                self.defer(job, reason, move=False)

    def _parked(self, job: Job) -> bool:
        """Did ``job`` end deferred (it stays in the journal for a later run)?"""
        error = job.error
        return isinstance(error, JobDeferred) or (error is not None and error is self.halted)

    def defer_all(self, reason: str) -> None:
        """Stop, and end every unfinished handle (the journal keeps each job where it was)."""
        self.stop(reason)
        for job in list(self.jobs.values()):
            if not job.done:
                self.defer(job, reason, move=False)

    async def join(self) -> None:
        while self.unfinished:
            await self._idle.wait()

    # -- state changes and endings ---------------------------------------------------

    def set_state(self, job: Job, new: S, **info: Any) -> None:
        old = job._move(new)
        if new is not S.PENDING and new is not S.QUEUED:
            job.reason = info.get("reason")
        self.emit(job, old, **info)

    def emit(self, job: Job, old: S, **info: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job %s: %s -> %s",
                job.key,
                old,
                job.state,
                extra={"job": job.key, "state": str(job.state), "generation_id": job.generation_id},
            )
        events = self.events
        if not events.listened:
            events.count(job.family, old, job.state)  # no one to build the event for
            return
        events.publish(
            JobEvent(
                key=job.key,
                old=old,
                new=job.state,
                at=time.time(),
                family=job.family,
                generation_id=job.generation_id,
                info=info,
            )
        )

    def complete(self, job: Job, result: JobResult) -> None:
        if job.done:
            return
        self.set_state(job, S.COMPLETED)
        self.finish(job, result, None)

    def fail(self, job: Job, error: BaseException, *, journal: bool = True) -> None:
        """End ``job`` with ``error``; ``journal=False`` when the caller already
        recorded the failure."""
        if job.done:
            return
        logger.info("job %s failed: %s", job.key, error)
        if journal:
            # Cut: a reason can carry a server's text (a failure_reason, a detail).
            reason = str(error)[:_REASON_LIMIT]
            self._writes.update_soon(
                job.key, state="failed", reason=reason, error_type=type(error).__name__
            )
        self.set_state(job, S.FAILED, error=str(error))
        self.finish(job, None, error)

    def cancelled(self, job: Job) -> None:
        """End ``job`` as cancelled (the caller records it in the journal)."""
        self.set_state(job, S.CANCELLED)
        self.finish(job, None, JobCancelled(job.key))

    def defer(self, job: Job, reason: str, *, move: bool = True) -> None:
        """End the handle with ``JobDeferred``; the job stays in the journal for a
        later run (with ``move``, a job not yet created goes back to pending)."""
        if job.done:
            return
        if move and job.state in (S.PENDING, S.QUEUED, S.WAITING):
            job.reason = reason
            self.set_state(job, S.PENDING, reason=reason)
            self._writes.update_soon(job.key, state="pending", reason=reason)
        error = self.halted if self.halted is not None else JobDeferred(job.key, reason)
        self.finish(job, None, error)

    def finish(self, job: Job, result: JobResult | None, error: BaseException | None) -> None:
        if job.done:
            return
        job._finish(result, error)
        self.unfinished -= 1
        if self.unfinished == 0:
            self._idle.set()
        self._on_dependency_done(job)
        self._unmet.pop(job.key, None)
        for dep_key in self._holding.pop(job.key, ()):
            held = self._holds.pop(dep_key) - 1
            if held:
                self._holds[dep_key] = held
            else:
                dep = self.jobs.get(dep_key)
                if dep is not None:
                    self.release(dep)
        self.release(job)

    # -- releasing ended jobs ------------------------------------------------------------

    def release(self, job: Job) -> None:
        """Drop ``job`` from the table if it has ended and nothing here needs it
        (once what the journal was told about it is committed)."""
        if (
            job.state in TERMINAL_STATES
            and job.done
            and job.key not in self._holds
            and not self.holds_slot(job.key)
            and self.jobs.get(job.key) is job
        ):
            self._writes.after_committed(partial(self._forget, job))

    def _forget(self, job: Job) -> None:
        if self.jobs.get(job.key) is not job or job.key in self._holds:
            return  # picked up again meanwhile, or needed again
        del self.jobs[job.key]
        gid = job.generation_id
        if gid is not None and self.generation_owners.get(gid) == job.key:
            del self.generation_owners[gid]
            if self._writes.journal is None:
                # The journal would answer ``owner_of`` for it; without one, remember
                # it as long as a reconcile could still come across it.
                self._released_owners[gid] = (job.key, self._clock.monotonic())
                self._forget_old_owners()

    def _forget_old_owners(self) -> None:
        cutoff = self._clock.monotonic() - self._owner_memory
        released = self._released_owners
        while released:
            gid, (_, at) = next(iter(released.items()))
            if at >= cutoff:
                break
            del released[gid]

    def owner_of(self, generation_id: str) -> str | None:
        """The key of the job of this scheduler (or, without a journal, released
        lately) that owns ``generation_id``; with a journal, ask it for released ones."""
        owner = self.generation_owners.get(generation_id)
        if owner is None and self._released_owners:
            self._forget_old_owners()
            owner = self._released_owners.get(generation_id, (None, 0.0))[0]
        return owner

    def generation_of(self, key: str) -> str | None:
        """The generation id of the job ``key``: from the table, else from the journal."""
        job = self.jobs.get(key)
        if job is not None:
            return job.generation_id
        record = self._writes.get(key)
        return None if record is None else record.generation_id

    def cancel(self, job: Job) -> None:
        """``job.cancel()``. A created generation runs on, and the poller still
        follows it to free its slot; a job in ``CREATING`` is decided when its
        create returns (``lumasched.engine._creating``)."""
        if job.state in (S.PENDING, S.WAITING, S.QUEUED, S.SUBMITTED, S.DOWNLOADING):
            self.set_state(job, S.CANCELLED)
            self._writes.update_soon(job.key, state="cancelled")
            self.finish(job, None, JobCancelled(job.key))
