"""Picking up the jobs a journal holds, at the point each one had reached.

A job never sent starts afresh. One with a generation id is polled (never
created again) and holds a slot while its generation runs. One with an intent
but no id had a create whose answer was lost: it is reconciled before
anything else. A completed one is verified on disk (downloaded again if its
file is gone or changed); a finished one is reported as it ended, except that
a failed download or an unresolved create is tried again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs

from lumasched.api import CreateRequest, Generation, family_of, request_from_dict, request_to_dict
from lumasched.engine._context import EngineContext
from lumasched.engine._creating import Creator
from lumasched.engine._digest import recorded_digest, request_digest
from lumasched.engine._following import Follower
from lumasched.engine.jobs import TERMINAL_STATES, Job, JobCancelled, JobResult, Timings
from lumasched.engine.jobs import JobState as S
from lumasched.errors import (
    DownloadError,
    GenerationFailed,
    ItemsChangedError,
    JournalledFailure,
    LumaError,
    Problem,
)
from lumasched.store.journal import JournalRecord

__all__ = ["Restorer"]

logger = logging.getLogger("lumasched.engine.scheduler")


class Restorer:
    """Turns journal records back into running jobs (see the module docstring)."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        follower: Follower,
        creator: Creator,
    ) -> None:
        self._client = ctx.client
        self._out_dir = ctx.out_dir
        self._table = ctx.table
        self._slots = ctx.slots
        self._writes = ctx.writes
        self._follower = follower
        self._creator = creator
        self._spawn = ctx.spawn

    def resume(self) -> list[Job]:
        """Every unfinished job of the journal, picked up (see ``Scheduler.resume``)."""
        jobs: list[Job] = []
        for record in self._writes.records():
            if record.key in self._table.jobs:
                continue
            recheck = record.state == S.COMPLETED and self._out_dir is not None
            if record.finished and not rerunnable(record) and not recheck:
                continue
            jobs.append(self.restore(record, None, priority=record.priority))
        return [job for job in jobs if not job.done or job.state is not S.COMPLETED]

    def restore_key(
        self, key: str, request: CreateRequest | None = None, *, priority: int | None = None
    ) -> Job | None:
        """The job ``key`` of the journal, picked up; None if the journal has none
        (see ``restore`` for ``request``; ``priority`` defaults to the recorded one).
        A job that ended and has nothing left to do (no file to check, nothing to
        try again) is answered from its record, without joining the table."""
        record = self._writes.get(key)
        if record is None:
            return None
        if request is not None and _changed(record, request):
            # Never hand over the old generation for a new request (the CLI asks
            # first: --redo-changed, which restarts the record before submitting).
            return _changed_handle(record, request)
        recheck = record.state == S.COMPLETED and self._out_dir is not None
        if record.finished and not rerunnable(record) and not recheck:
            return _ended_handle(record)
        return self.restore(
            record, request, priority=record.priority if priority is None else priority
        )

    def dependency(self, key: str) -> Job | None:
        """The job ``key`` of the journal, which a new job depends on: if it has ended,
        a handle answered from its record (it is not picked up again: a dependent
        needs only its generation id); else picked up. None if the journal has none."""
        record = self._writes.get(key)
        if record is None:
            return None
        if record.finished and not rerunnable(record):
            return _ended_handle(record)
        return self.restore(record, None, priority=record.priority)

    def ended(self, key: str) -> Job | None:
        """A handle of the job ``key`` if the journal has it ended, else None."""
        record = self._writes.get(key)
        if record is None or not record.finished:
            return None
        return _ended_handle(record)

    def restore(
        self, record: JournalRecord, request: CreateRequest | None, *, priority: int
    ) -> Job:
        """The job of ``record``; ``request``, when given, replaces the recorded one
        of a job never sent."""
        started = (
            record.generation_id is not None
            or record.intent_body is not None
            or record.state in TERMINAL_STATES
        )
        if not started:
            return self._restart(record, request, priority=priority)
        request = request_from_dict(record.kind, record.request)
        job = self._table.new_job(record.key, request, priority, record.depends_on)
        job.attempts = record.attempts
        job.generation_id = record.generation_id
        job.timings = attrs.evolve(
            job.timings,
            queued=record.queued_at,
            created=record.created_at,
            completed=record.completed_at,
            downloaded=record.downloaded_at,
        )
        if record.generation_id:
            self._table.generation_owners[record.generation_id] = record.key
        state = record.state
        if state == S.COMPLETED:
            generation = Generation.from_json(record.generation or {"id": record.generation_id})
            if self._out_dir is None:
                self._table.set_state(job, S.COMPLETED)
                result = JobResult(record.key, generation, timings=job.timings)
                self._table.finish(job, result, None)
            else:
                self._table.set_state(job, S.DOWNLOADING, resumed=True)
                self._spawn(self._verify_or_download, job, record, generation)
        elif state == S.CANCELLED or (state == S.FAILED and not rerunnable(record)):
            self._table.set_state(job, S(state), resumed=True)
            self._table.finish(job, None, _recorded_error(record))
        elif record.generation_id:
            # Created before: poll it (never create again); hold a slot while it runs.
            self._table.set_state(job, S.SUBMITTED, resumed=True)
            self._spawn(self._follow, job, record)
        else:
            self._table.set_state(job, S.CREATING, resumed=True)
            self._spawn(self._creator.reconcile_journalled, job, record)
        return job

    def _restart(
        self, record: JournalRecord, request: CreateRequest | None, *, priority: int
    ) -> Job:
        """A job never sent: start afresh (with the new request, if one was given)."""
        if request is None:
            request = request_from_dict(record.kind, record.request)
        else:
            self._writes.update_soon(
                record.key,
                request=request_to_dict(request),
                kind=request.kind,
                family=family_of(request.kind, request.model).value,
            )
        return self._table.start(
            request,
            key=record.key,
            priority=priority,
            depends_on=record.depends_on,
            record=False,
        )

    async def _follow(self, job: Job, record: JournalRecord) -> None:
        assert record.generation_id is not None
        if record.state == "downloading" and record.generation:
            generation = Generation.from_json(record.generation)
            self._table.set_state(job, S.DOWNLOADING)
            await self._follower.download(job, generation)
            return
        lease = record.lease_id or uuid.uuid4().hex
        self._follower.watch_restored(job, record.generation_id)
        await self._slots.acquire_for_generation(job, lease, record.generation_id)
        if job.state in TERMINAL_STATES or job.state is S.DOWNLOADING:
            await self._slots.release(job)

    async def _verify_or_download(
        self, job: Job, record: JournalRecord, generation: Generation
    ) -> None:
        from lumasched.engine.downloads import sha256_file

        if record.path is not None:
            path = Path(record.path)
            digest = await anyio.to_thread.run_sync(_digest_if_file, path, sha256_file)
            if digest == record.sha256:
                self._table.complete(job, _recorded_result(record, generation, job.timings))
                return
            logger.info("job %s: %s missing or changed; downloading again", job.key, path)
        else:
            # Recorded completed without a file (an older lumasched did that for a
            # generation without an asset URL): fetch it now.
            logger.info("job %s: completed without a file; downloading it", job.key)
        try:
            fresh = await self._client.get(generation.id)
        except LumaError as exc:
            self._creator.status_checked(exc)
            if self._table.halted is not None:
                # a rejected key or a dead API is not this job's failure
                self._table.defer(job, self._table.stopped_reason or "stopped", move=False)
            else:
                self._table.fail(job, DownloadError(f"could not re-read generation: {exc}"))
            return
        await self._follower.download(job, fresh)


def _handle(record: JournalRecord, request: CreateRequest, state: S) -> Job:
    """A handle for ``record``'s job outside any table (to be finished by the caller)."""
    return Job(
        key=record.key,
        request=request,
        family=family_of(request.kind, request.model),
        priority=record.priority,
        depends_on=record.depends_on,
        state=state,
        generation_id=record.generation_id,
        attempts=record.attempts,
        timings=Timings(
            queued=record.queued_at,
            created=record.created_at,
            completed=record.completed_at,
            downloaded=record.downloaded_at,
        ),
    )


def _ended_handle(record: JournalRecord) -> Job:
    """A done handle for a job that ended, as its record says, outside any table."""
    job = _handle(record, request_from_dict(record.kind, record.request), S(record.state))
    if record.state == S.COMPLETED:
        generation = Generation.from_json(record.generation or {"id": record.generation_id})
        job._finish(_recorded_result(record, generation, job.timings), None)
    else:
        job._finish(None, _recorded_error(record))
    return job


def _changed(record: JournalRecord, request: CreateRequest) -> bool:
    """Was ``record`` created (or its create sent) for another request than ``request``?"""
    if record.generation_id is None and record.intent_body is None:
        return False
    return recorded_digest(record) != request_digest(request)


def _changed_handle(record: JournalRecord, request: CreateRequest) -> Job:
    """A done handle failed with ``ItemsChangedError`` (nothing is journalled)."""
    job = _handle(record, request, S.FAILED)
    since = (
        f"generation {record.generation_id} was created"
        if record.generation_id
        else ("its create was sent")
    )
    problem = Problem(record.key, f"request changed since {since}")
    job._finish(None, ItemsChangedError([problem]))
    return job


def _recorded_result(record: JournalRecord, generation: Generation, timings: Timings) -> JobResult:
    """The result of a completed job, with its file as the journal recorded it."""
    return JobResult(
        record.key,
        generation,
        path=record.path,
        sha256=record.sha256,
        bytes=record.bytes,
        timings=timings,
    )


_FOLLOW_AGAIN = frozenset(
    {"DownloadError", "AssetTooLargeError", "GenerationTimeout", "MissingAssetError"}
)
"""Failures of a job whose generation exists: a rerun follows it again (the
generation may have ended, its asset appeared, the disk been freed)."""


def rerunnable(record: JournalRecord) -> bool:
    """A failed job worth picking up again on a new run."""
    if record.state != S.FAILED:
        return False
    # A finished generation whose download failed is fetched again; an
    # unresolved create is reconciled again (never blindly re-created).
    followable = record.error_type in _FOLLOW_AGAIN and record.generation_id is not None
    return followable or record.error_type == "AmbiguousCreateError"


def _recorded_error(record: JournalRecord) -> LumaError:
    """The error a job cancelled or failed in an earlier run ended with."""
    if record.state == S.CANCELLED:
        return JobCancelled(record.key)
    if record.error_type == "GenerationFailed":
        return GenerationFailed(record.generation_id, record.reason)
    return JournalledFailure(record.key, record.error_type, record.reason)


def _digest_if_file(path: Path, digest: Callable[[Path], str]) -> str | None:
    return digest(path) if path.is_file() else None
