"""The scheduler: many generation requests to finished files, within the account's limits.

::

    async with LumaClient() as client, Scheduler(client, journal=Journal("run.db"),
                                                 out_dir=Path("out")) as scheduler:
        video = scheduler.submit(VideoRequest("a teddy bear"), key="bear")
        longer = scheduler.submit(
            VideoRequest("it walks", keyframes=Keyframes(GenerationKeyframe(scheduler.ref(video)))),
            key="bear-2",
        )
        result = await longer            # JobResult(path=..., sha256=..., ...)

Each job goes ``pending -> [waiting] -> queued -> creating -> submitted ->
[downloading] -> completed`` (or ``failed``/``cancelled``). One task per family
hands out create permissions from the ``Limiter`` (higher priority first, FIFO
within a priority); a create task writes the intent to the journal, sends the
create, and records the id; the ``Poller`` follows the generation; at its end the
concurrency slot is released and the asset downloaded. Failures are values on
the job, never exceptions in the task group. See ``docs/guarantees.md`` for
what survives a crash.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched._reconcile import DEFAULT_SKEW, find_created
from lumasched.api import (
    CreateRequest,
    Generation,
    generation_refs,
    replace_generation_refs,
    request_from_dict,
    request_to_dict,
)
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
    ConnectError,
    DependencyFailed,
    DownloadError,
    GenerationFailed,
    InternalServerError,
    LumaError,
    RateLimitError,
    ValidationError,
)
from lumasched.events import Counters, EventHub, Listener
from lumasched.jobs import TERMINAL_STATES, Job, JobCancelled, JobDeferred, JobEvent, JobResult
from lumasched.jobs import JobState as S
from lumasched.journal import Journal, JournalRecord, NewJob
from lumasched.limits import Family, Limiter, Limits, family_of

if TYPE_CHECKING:
    from lumasched.api import LumaClient
    from lumasched.claims import ItemClaims
    from lumasched.downloads import Downloader
    from lumasched.poller import Poller

__all__ = ["REF_PREFIX", "JournalledFailure", "Scheduler"]

logger = logging.getLogger("lumasched.scheduler")

REF_PREFIX = "job:"
"""Prefix of the placeholder generation id that stands for another job's generation."""

DEFAULT_MAX_PENDING = 256
DEFAULT_RECONCILE_SETTLE = 120.0
DEFAULT_RECONCILE_GIVE_UP = 900.0
DEFAULT_RECONCILE_INTERVAL = 5.0
MAX_CONNECT_ATTEMPTS = 8

Item = CreateRequest | tuple[str, CreateRequest]


def _now() -> float:
    return time.time()


class Scheduler:
    """Runs generation jobs within the account's limits; an async context manager.

    Arguments:
        client: an open ``LumaClient``.
        limiter: the ``Limiter`` to share (default: an ``InProcessLimiter`` of the
            Build tier, owned by this scheduler).
        journal: record every job there, and resume what it already holds.
        out_dir: download each finished asset to ``out_dir/<key>.<ext>``.
        poller, downloader: override the defaults (``Poller(client)``,
            ``Downloader(client)``).
        callback_url: set on every request that has none, so the server's
            callbacks can hint the poller.
        budget_cents, cost_of: stop creating once the estimated cost of the jobs
            created in this session would pass the budget.
        resume: on entering, pick up every unfinished job of the journal (as
            ``resume()`` does); otherwise journalled jobs are picked up when their
            key is submitted again.
        claims: when several hosts work one manifest (``lumasched.claims``):
            each create's intent is recorded there first (and not sent if
            another host took the item over), then its generation id; reconcile
            never adopts a generation another host's item owns.
        reconcile_settle: after a create with an unknown outcome, how long (from
            its send time) the list endpoint must keep *not* showing it before the
            create may be retried; ``reconcile_give_up``: when to stop trying and
            fail the job instead.

    Leaving the ``async with`` block normally waits for every submitted job;
    leaving it with an exception stops at once (what is in flight stays in the
    journal, for the next run to pick up).
    """

    def __init__(
        self,
        client: LumaClient,
        *,
        limiter: Limiter | None = None,
        journal: Journal | None = None,
        out_dir: str | Path | None = None,
        poller: Poller | None = None,
        downloader: Downloader | None = None,
        callback_url: str | None = None,
        budget_cents: float | None = None,
        cost_of: Callable[[CreateRequest], float] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_pending: int = DEFAULT_MAX_PENDING,
        reconcile_settle: float = DEFAULT_RECONCILE_SETTLE,
        reconcile_give_up: float = DEFAULT_RECONCILE_GIVE_UP,
        reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL,
        reconcile_skew: float = DEFAULT_SKEW,
        owner: str | None = None,
        resume: bool = False,
        claims: ItemClaims | None = None,
    ) -> None:
        if budget_cents is not None and cost_of is None:
            raise ValueError("budget_cents needs cost_of to estimate what a request costs")
        self._client = client
        self._own_limiter = limiter is None
        if limiter is None:
            from lumasched.limits import InProcessLimiter

            limiter = InProcessLimiter(Limits(), clock=clock)
        self._limiter: Limiter = limiter
        self._journal = journal
        self._out_dir = None if out_dir is None else Path(out_dir)
        if poller is None:
            from lumasched.poller import Poller

            poller = Poller(client, clock=clock)
        self._poller = poller
        if downloader is None and self._out_dir is not None:
            from lumasched.downloads import Downloader

            downloader = Downloader(client)
        self._downloader = downloader
        self._callback_url = callback_url
        self._budget = budget_cents
        self._cost_of = cost_of
        self._clock = clock
        self.max_pending = max_pending
        self._settle = reconcile_settle
        self._give_up = reconcile_give_up
        self._reconcile_interval = reconcile_interval
        self._skew = reconcile_skew
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._resume_on_enter = resume
        self._claims = claims

        self._jobs: dict[str, Job] = {}
        self._gen_owner: dict[str, str] = {}
        self._dependents: dict[str, list[Job]] = {}
        self._queues: dict[Family, list[tuple[int, int, Job]]] = {f: [] for f in Family}
        self._wakeups: dict[Family, anyio.Event] = {}
        self._held: dict[str, str] = {}
        self._creating: dict[str, str] = {}
        self._acquiring: dict[str, anyio.CancelScope] = {}
        self._new_rows: list[NewJob] = []
        self._updates: list[tuple[str, dict[str, Any]]] = []
        self._rows_event: anyio.Event | None = None
        self._seq = 0
        self._spent = 0.0
        self._stopped_reason: str | None = None
        self._unfinished = 0
        self._idle: anyio.Event | None = None
        self._reconcile_lock: anyio.Lock | None = None
        self._flush_lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._host: TaskGroup | None = None
        self._workers_done: anyio.Event | None = None
        self._closed = False
        self.events = EventHub()
        self._n: dict[str, int] = dict.fromkeys(
            (
                "creates",
                "create_attempts",
                "rate_limited",
                "ambiguous_creates",
                "reconciles",
                "reconciled_found",
                "downloads",
                "bytes_downloaded",
            ),
            0,
        )

    def __repr__(self) -> str:
        return f"<Scheduler jobs={len(self._jobs)} unfinished={self._unfinished}>"

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None or self._closed:
            raise RuntimeError("a Scheduler can be entered only once")
        self._wakeups = {f: anyio.Event() for f in Family}
        self._rows_event = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._reconcile_lock = anyio.Lock()
        self._workers_done = anyio.Event()
        if self._own_limiter:
            await self._limiter.__aenter__()
        # The entering task owns `host`; the scheduler's own tasks run in a task
        # group inside it, so that stopping them (from any task) never cancels
        # the code in the caller's `async with` block.
        host = anyio.create_task_group()
        await host.__aenter__()
        try:
            self._tg = await host.start(self._run_workers)
        except BaseException as exc:
            host.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await host.__aexit__(type(exc), exc, exc.__traceback__)
                if self._own_limiter:
                    await self._limiter.__aexit__(None, None, None)
            raise
        self._host = host
        if self._resume_on_enter:
            self.resume()
        return self

    async def _run_workers(self, *, task_status: TaskStatus[TaskGroup]) -> None:
        assert self._workers_done is not None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._poller.run)
                tg.start_soon(self._journal_writer)
                tg.start_soon(self._adopt_orphans_loop)
                for family in Family:
                    tg.start_soon(self._dispatch, family)
                task_status.started(tg)
                await anyio.sleep_forever()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None  # one level of grouping, as before
            raise
        finally:
            self._workers_done.set()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        try:
            if exc_type is None:
                await self.join()
            else:
                self._stop("shutdown")
        finally:
            suppress = await self._exit_host(exc_type, exc, tb)
        return suppress

    async def _close(self) -> None:
        """Stop every task of the scheduler and wait for them to end (from any
        task: the task group itself is exited only by ``__aexit__``, in the task
        that entered it, whatever scopes the caller has opened since)."""
        workers = self._tg
        if workers is None or self._workers_done is None:
            return
        if not self._closed:
            self._closed = True
            try:
                self._stop("shutdown")
                for job in list(self._jobs.values()):
                    if not job.done:
                        self._defer(job, "shutdown", move=False)
            finally:
                workers.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._workers_done.wait()
            await self._flush_rows()
            self.events.close()

    async def _exit_host(self, exc_type: object, exc: object, tb: object) -> bool:
        host = self._host
        if host is None:
            return False
        try:
            await self._close()
        finally:
            self._host = None
            try:
                suppress = bool(await host.__aexit__(exc_type, exc, tb))  # type: ignore[arg-type]
            finally:
                self._tg = None
                if self._own_limiter:
                    with anyio.CancelScope(shield=True):
                        await self._limiter.__aexit__(None, None, None)
        return suppress

    async def join(self) -> None:
        """Wait until every submitted job has finished (or been deferred)."""
        assert self._idle is not None
        while self._unfinished:
            await self._idle.wait()

    async def stop_creating(self) -> None:
        """Send no more creates. Queued and waiting jobs stay ``pending`` in the
        journal (their handles raise ``JobDeferred("stopped")``); creates already
        sent and generations in flight carry on."""
        self._stop("stopped")
        await self._flush_rows()

    async def shutdown(self, *, wait: bool = True) -> None:
        """Stop creating; with ``wait``, let in-flight jobs finish, else stop at once
        (they stay in the journal as submitted, for the next run)."""
        await self.stop_creating()
        if wait:
            await self.join()
        await self._close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the Scheduler is closed")
        if self._tg is None:
            raise RuntimeError("use the Scheduler inside 'async with'")

    def _stop(self, reason: str) -> None:
        if self._stopped_reason is None:
            self._stopped_reason = reason
            logger.info("creating stopped (%s)", reason)
        for queue in self._queues.values():
            while queue:
                _, _, job = heapq.heappop(queue)
                if job.state is S.QUEUED:
                    self._defer(job, reason)
        for waiters in self._dependents.values():
            for job in waiters:
                if not job.done and job.state is S.WAITING:
                    self._defer(job, reason)
        for family in Family:
            self._wake(family)

    # -- submitting --------------------------------------------------------------

    @staticmethod
    def ref(job: Job | str) -> str:
        """A placeholder generation id standing for ``job``'s generation, for use in
        keyframes or as an upscale/audio source. The dependent job waits for it."""
        return REF_PREFIX + (job if isinstance(job, str) else job.key)

    def submit(
        self,
        request: CreateRequest,
        *,
        key: str | None = None,
        priority: int = 0,
        depends_on: Iterable[Job | str] = (),
    ) -> Job:
        """Schedule ``request``; returns its ``Job`` at once.

        ``key`` identifies the job in the journal: submitting a key the journal
        already holds resumes that job (polling, reconciling or downloading as
        needed) instead of creating it again, and submitting a key twice returns
        the same ``Job``. References made with ``ref()`` (or ``depends_on``) must
        name jobs submitted earlier.
        """
        self._check_open()
        if key is None:
            key = uuid.uuid4().hex[:12]
        existing = self._jobs.get(key)
        if existing is not None:
            return existing
        record = self._journal.get(key) if self._journal is not None else None
        if record is not None:
            return self._restore(record, request, priority=priority)
        return self._start_new(request, key=key, priority=priority, depends_on=depends_on)

    def resume(self) -> list[Job]:
        """Pick up every unfinished job of the journal (without re-submitting them)."""
        self._check_open()
        if self._journal is None:
            return []
        jobs: list[Job] = []
        for record in self._journal.records():
            if record.key in self._jobs:
                continue
            recheck = record.state == S.COMPLETED and self._out_dir is not None
            if record.finished and not _rerunnable(record) and not recheck:
                continue
            jobs.append(self._restore(record, None, priority=record.priority))
        return [job for job in jobs if not job.done or job.state is not S.COMPLETED]

    def _new_job(
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
        job._canceller = self._cancel
        self._jobs[key] = job
        self._unfinished += 1
        assert self._idle is not None
        if self._idle.is_set():
            self._idle = anyio.Event()
        self.events.count_new(job.family, S.PENDING)
        return job

    def _start_new(
        self,
        request: CreateRequest,
        *,
        key: str,
        priority: int,
        depends_on: Iterable[Job | str],
        record: bool = True,
    ) -> Job:
        deps = [d if isinstance(d, str) else d.key for d in depends_on]
        deps += [r[len(REF_PREFIX) :] for r in generation_refs(request) if r.startswith(REF_PREFIX)]
        job = self._new_job(key, request, priority, tuple(dict.fromkeys(deps)))
        if record and self._journal is not None:
            self._queue_row(job)
        self._after_deps_known(job)
        return job

    def _queue_row(self, job: Job) -> None:
        self._new_rows.append(
            NewJob(
                key=job.key,
                kind=job.request.kind,
                request=request_to_dict(job.request),
                family=job.family.value,
                priority=job.priority,
                depends_on=job.depends_on,
                queued_at=_now(),
            )
        )
        assert self._rows_event is not None
        self._rows_event.set()

    def _after_deps_known(self, job: Job) -> None:
        unmet = []
        for dep_key in job.depends_on:
            dep = self._jobs.get(dep_key)
            if dep is None and self._journal is not None:
                # Finished in an earlier run (or not re-submitted yet): pick it up.
                record = self._journal.get(dep_key)
                if record is not None:
                    dep = self._restore(record, None, priority=record.priority)
            if dep is None:
                self._fail(job, DependencyFailed(job.key, dep_key, "was never submitted"))
                return
            if dep.done and dep.state is not S.COMPLETED:
                self._fail_dependency(job, dep)
                return
            if not dep.done:
                unmet.append(dep)
        if unmet:
            self._set_state(job, S.WAITING, waiting_for=[d.key for d in unmet])
            for dep in unmet:
                self._dependents.setdefault(dep.key, []).append(job)
        else:
            self._enqueue(job)

    def _fail_dependency(self, job: Job, dep: Job) -> None:
        if dep.state is S.CANCELLED:
            why = "was cancelled"
        elif isinstance(dep.error, JobDeferred):
            why = f"was deferred ({dep.error.reason})"
        else:
            why = f"failed: {dep.error}"
        self._fail(job, DependencyFailed(job.key, dep.key, why))

    def _on_dependency_done(self, dep: Job) -> None:
        for job in self._dependents.pop(dep.key, []):
            if job.done:
                continue
            if dep.state is not S.COMPLETED or dep.error is not None:
                if isinstance(dep.error, JobDeferred) and self._stopped_reason is not None:
                    self._defer(job, dep.error.reason)
                else:
                    self._fail_dependency(job, dep)
                continue
            if all(self._jobs[k].state is S.COMPLETED for k in job.depends_on):
                self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        if self._stopped_reason is not None:
            self._defer(job, self._stopped_reason)
            return
        self._set_state(job, S.QUEUED)
        if job.timings.queued is None:
            job.timings = attrs.evolve(job.timings, queued=_now())
        heapq.heappush(self._queues[job.family], (-job.priority, job.seq, job))
        self._wake(job.family)

    def _wake(self, family: Family) -> None:
        event = self._wakeups.get(family)
        if event is not None:
            event.set()
            self._wakeups[family] = anyio.Event()

    # -- lazy, bounded iteration ---------------------------------------------------

    def _submit_item(self, item: Item) -> Job:
        if isinstance(item, tuple):
            key, request = item
            return self.submit(request, key=key)
        return self.submit(item)

    async def as_completed(
        self, items: Iterable[Item] | AsyncIterable[Item], *, max_pending: int | None = None
    ) -> AsyncIterator[Job]:
        """Submit ``items`` (requests, or ``(key, request)`` pairs) and yield each
        ``Job`` as it finishes. At most ``max_pending`` unfinished jobs exist at a
        time: the input is read lazily, so it may be endless or huge."""
        limit = max_pending or self.max_pending
        pull = _puller(items)
        send, receive = anyio.create_memory_object_stream[Job](float("inf"))
        unfinished: set[Job] = set()
        exhausted = False

        def deliver(job: Job) -> None:
            # A job may finish after this generator has ended (it was cancelled,
            # or the consumer left): then there is no one to tell.
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(job)

        try:
            with send, receive:
                while True:
                    while not exhausted and len(unfinished) < limit:
                        try:
                            item = await pull()
                        except StopAsyncIteration:
                            exhausted = True
                            break
                        job = self._submit_item(item)
                        unfinished.add(job)
                        job._add_done_callback(deliver)
                    if not unfinished:
                        return
                    job = await receive.receive()
                    unfinished.discard(job)
                    yield job
        finally:
            for job in unfinished:
                job._remove_done_callback(deliver)

    async def map(
        self,
        items: Iterable[Item] | AsyncIterable[Item],
        *,
        max_pending: int | None = None,
        return_exceptions: bool = False,
    ) -> AsyncIterator[JobResult | LumaError]:
        """Like ``as_completed`` but yields results in input order; a failed job
        raises its error (or is yielded as the error with ``return_exceptions``)."""
        limit = max_pending or self.max_pending
        pull = _puller(items)
        window: deque[Job] = deque()
        exhausted = False
        while True:
            while not exhausted and len(window) < limit:
                try:
                    window.append(self._submit_item(await pull()))
                except StopAsyncIteration:
                    exhausted = True
            if not window:
                return
            job = window.popleft()
            try:
                result = await job.result()
            except LumaError as exc:
                if not return_exceptions:
                    raise
                yield exc
            else:
                yield result

    # -- creating ----------------------------------------------------------------

    async def _dispatch(self, family: Family) -> None:
        queue = self._queues[family]
        while True:
            while not queue or self._stopped_reason is not None:
                await self._wakeups[family].wait()
            lease = uuid.uuid4().hex
            await self._limiter.acquire(family, lease)
            job = self._pop(family)
            if job is None or self._stopped_reason is not None:
                await self._release_lease(family, lease)
                if job is not None:
                    self._defer(job, self._stopped_reason or "stopped")
                continue
            if not self._within_budget(job):
                await self._release_lease(family, lease)
                self._defer(job, "budget")
                self._stop("budget")
                continue
            self._held[job.key] = lease
            assert self._tg is not None
            self._set_state(job, S.CREATING)
            self._tg.start_soon(self._create, job, lease)

    def _pop(self, family: Family) -> Job | None:
        queue = self._queues[family]
        while queue:
            _, _, job = heapq.heappop(queue)
            if job.state is S.QUEUED and not job.done:
                return job
        return None

    def _within_budget(self, job: Job) -> bool:
        if self._budget is None or self._cost_of is None or job.attempts:
            return True
        cost = self._cost_of(job.request)
        if self._spent + cost > self._budget:
            logger.info("budget reached: %.1f of %.1f cents spent", self._spent, self._budget)
            return False
        self._spent += cost
        return True

    def _resolved(self, job: Job) -> CreateRequest:
        request = job.request
        if job.depends_on:

            def swap(ref: str) -> str:
                if ref.startswith(REF_PREFIX):
                    dep = self._jobs[ref[len(REF_PREFIX) :]]
                    assert dep.generation_id is not None
                    return dep.generation_id
                return ref

            request = replace_generation_refs(request, swap)
        if self._callback_url and getattr(request, "callback_url", "") is None:
            request = attrs.evolve(request, callback_url=self._callback_url)
        return request

    async def _create(self, job: Job, lease: str) -> None:
        request = self._resolved(job)
        body = _match_body(request)
        sent_at = _now()
        job.attempts += 1
        self._n["create_attempts"] += 1
        await self._write(
            self._jw().record_intent,
            job.key,
            lease_id=lease,
            body=body,
            sent_at=sent_at,
            owner=self._owner,
        )
        if self._claims is not None and not await self._claims.before_create(
            job.key, body=body, sent_at=sent_at, lease_id=lease
        ):
            from lumasched.claims import ClaimLost

            # Another worker holds the item now (see docs/multihost.md): send nothing.
            await self._release(job)
            await self._write(
                self._jw().clear_intent, job.key, state="pending", reason="claim lost"
            )
            self._fail(job, ClaimLost(job.key), journal=False)
            return
        try:
            generation = await self._send_create(job, request, body)
        except RateLimitError as exc:
            self._n["rate_limited"] += 1
            logger.info("create of job %s got 429; re-queued", job.key)
            await self._limiter.note_rate_limited(job.family, exc.retry_after)
            await self._give_back(job, reason="rate_limited")
        except ConnectError as exc:
            await self._retry_later(job, exc)
        except AmbiguousCreateError as exc:
            self._n["ambiguous_creates"] += 1
            logger.warning("create of job %s has an unknown outcome: %s", job.key, exc)
            await self._reconcile(job, lease, body, exc.sent_at or sent_at)
        except (ValidationError, APIStatusError) as exc:
            if isinstance(exc, InternalServerError):
                self._n["ambiguous_creates"] += 1
                await self._reconcile(job, lease, body, sent_at)
                return
            await self._release(job)
            await self._write(self._jw().clear_intent, job.key, state="failed", reason=str(exc))
            self._fail(job, exc, journal=False)
        except Exception as exc:
            # Anything else may have happened after the server accepted the create.
            self._n["ambiguous_creates"] += 1
            logger.warning("create of job %s ended unexpectedly: %r", job.key, exc)
            await self._reconcile(job, lease, body, sent_at)
        else:
            await self._created(job, lease, generation, reconciled=False)

    async def _send_create(
        self, job: Job, request: CreateRequest, body: dict[str, Any]
    ) -> Generation:
        self._creating[job.key] = _fingerprint(body)
        try:
            return await self._client.create(request, retry_rate_limited=False)
        finally:
            self._creating.pop(job.key, None)

    async def _give_back(self, job: Job, *, reason: str) -> None:
        """The create surely did not happen: free the slot and queue the job again."""
        await self._release(job)
        state = "cancelled" if job.cancel_requested else "queued"
        await self._write(self._jw().clear_intent, job.key, state=state, reason=reason)
        if job.cancel_requested:
            self._set_state(job, S.CANCELLED)
            self._finish(job, None, JobCancelled(job.key))
            return
        job.reason = reason
        self._set_state(job, S.QUEUED, reason=reason)
        if self._stopped_reason is not None:
            self._defer(job, self._stopped_reason)
            return
        heapq.heappush(self._queues[job.family], (-job.priority, job.seq, job))
        self._wake(job.family)

    async def _retry_later(self, job: Job, exc: LumaError) -> None:
        """The server could not be reached (nothing was sent): back off, re-queue."""
        if job.attempts >= MAX_CONNECT_ATTEMPTS:
            await self._release(job)
            await self._write(self._jw().clear_intent, job.key, state="failed", reason=str(exc))
            self._fail(job, exc, journal=False)
            return
        await self._release(job)
        await self._write(self._jw().clear_intent, job.key, state="queued", reason="connect_error")
        await self._clock.sleep(min(2.0**job.attempts, 30.0))
        await self._give_back(job, reason="connect_error")

    async def _created(
        self, job: Job, lease: str, generation: Generation, *, reconciled: bool
    ) -> None:
        job.generation_id = generation.id
        self._gen_owner[generation.id] = job.key
        await self._write(self._jw().record_submitted, job.key, generation.id)
        if self._claims is not None:
            await self._claims.created(job.key, generation.id)
        job.timings = attrs.evolve(job.timings, created=_now())
        self._n["creates"] += 1
        await self._limiter.mark_submitted(job.family, lease, generation.id)
        if not reconciled:
            await self._limiter.note_success(job.family)
        logger.info(
            "job %s created generation %s%s",
            job.key,
            generation.id,
            " (found by reconcile)" if reconciled else "",
        )
        if job.cancel_requested and not job.done:
            await self._write(self._jw().update, job.key, state="cancelled")
            self._set_state(job, S.CANCELLED)
            self._finish(job, None, JobCancelled(job.key))
        else:
            self._set_state(job, S.SUBMITTED, server_state=str(generation.state))
        self._watch(job, generation, learn=True)

    # -- reconcile ---------------------------------------------------------------

    async def _reconcile(self, job: Job, lease: str, body: dict[str, Any], sent_at: float) -> None:
        """Find the generation an ambiguous create may have started, before any retry."""
        assert self._reconcile_lock is not None
        job.reason = "reconciling"
        self._emit(job, job.state, reconciling=True)
        while True:
            try:
                async with self._reconcile_lock:
                    self._n["reconciles"] += 1
                    taken = self._taken_for(job)
                    if self._claims is not None:
                        # generations other hosts' items own are taken too
                        elsewhere = await self._claims.taken_generations(job.key)
                        taken = partial(_taken_anywhere, taken, elsewhere)
                    found = await find_created(
                        self._client,
                        body=body,
                        sent_at=sent_at,
                        is_taken=taken,
                        skew=self._skew,
                    )
                    if found.generation is None and self._twin_in_flight(job, body):
                        # A job with the same body awaits its create's answer: the
                        # generation listed may be that one's. Ask again later.
                        found = attrs.evolve(found, conclusive=False, reason="twin in flight")
                    elif found.generation is not None and self._twin_in_flight(job, body):
                        found = attrs.evolve(
                            found, generation=None, conclusive=False, reason="twin in flight"
                        )
                    if (
                        found.generation is not None
                        and self._claims is not None
                        and not await self._claims.found(job.key, found.generation.id, body)
                    ):
                        found = attrs.evolve(
                            found, generation=None, conclusive=False, reason="claimed elsewhere"
                        )
                    if found.generation is not None:
                        self._n["reconciled_found"] += 1
                        await self._created(job, lease, found.generation, reconciled=True)
                        return
            except LumaError as exc:
                logger.warning("reconcile of job %s failed (will retry): %s", job.key, exc)
                found = None
            now = _now()
            if found is not None and found.conclusive and now >= sent_at + self._settle:
                logger.info(
                    "job %s: no generation found %.0fs after its create; creating again",
                    job.key,
                    now - sent_at,
                )
                await self._give_back(job, reason="reconciled_absent")
                return
            if now >= sent_at + self._give_up:
                reason = found.reason if found is not None else "list endpoint unavailable"
                error = AmbiguousCreateError(
                    f"could not tell whether the create reached the server ({reason}); "
                    "check the account's generations before running it again",
                    path=job.request.path,
                    body=body,
                    sent_at=sent_at,
                )
                await self._release(job)
                self._fail(job, error)
                return
            wait = self._reconcile_interval
            if found is not None and found.conclusive:
                wait = min(wait, max(0.0, sent_at + self._settle - now))
            await self._clock.sleep(wait)

    def _twin_in_flight(self, job: Job, body: dict[str, Any]) -> bool:
        fingerprint = _fingerprint(body)
        return any(key != job.key and fp == fingerprint for key, fp in self._creating.items())

    def _taken_for(self, job: Job) -> Callable[[str], bool]:
        """Generation ids reconcile must not adopt for ``job``: those other jobs own
        (except its own sources, which an upscale may restart under the same id)."""
        mine = {job.key, *job.depends_on}

        def taken(generation_id: str) -> bool:
            owner = self._gen_owner.get(generation_id)
            if owner is not None and owner not in mine:
                return True
            if self._journal is None:
                return False
            return any(key not in mine for key in self._journal.owners_of(generation_id))

        return taken

    # -- following a generation --------------------------------------------------

    def _watch(self, job: Job, generation: Generation, *, learn: bool) -> None:
        from lumasched.poller import latency_key_for

        if generation.is_terminal:
            assert self._tg is not None
            self._tg.start_soon(self._on_terminal, job, generation)
            return
        self._poller.watch(
            generation.id,
            key=latency_key_for(job.request),
            on_update=partial(self._on_update, job),
            on_error=partial(self._on_gone, job),
            learn=learn,
        )

    async def _on_update(self, job: Job, generation: Generation) -> None:
        """The poller's callback: stays quick (journal writes happen in a task)."""
        if not generation.is_terminal:
            if not job.done:
                self._emit(job, job.state, server_state=str(generation.state))
            return
        assert self._tg is not None
        self._tg.start_soon(self._on_terminal, job, generation)

    async def _on_terminal(self, job: Job, generation: Generation) -> None:
        await self._release(job)
        if job.done:
            return
        completed_at = _now()
        job.timings = attrs.evolve(job.timings, completed=completed_at)
        if generation.state == "completed":
            url = generation.asset_url
            if self._out_dir is not None and url:
                await self._write(
                    self._jw().update,
                    job.key,
                    state="downloading",
                    generation=generation.to_json(),
                    completed_at=completed_at,
                )
                self._set_state(job, S.DOWNLOADING)
                assert self._tg is not None
                self._tg.start_soon(self._download, job, generation)
                return
            await self._write(
                self._jw().update,
                job.key,
                state="completed",
                generation=generation.to_json(),
                completed_at=completed_at,
            )
            self._complete(job, JobResult(job.key, generation, timings=job.timings))
            return
        await self._write(self._jw().update, job.key, generation=generation.to_json())
        self._fail(job, GenerationFailed(generation.id, generation.failure_reason))

    async def _on_gone(self, job: Job, exc: BaseException) -> None:
        await self._release(job)
        if not job.done:
            self._fail(job, exc if isinstance(exc, LumaError) else LumaError(str(exc)))

    async def _download(self, job: Job, generation: Generation) -> None:
        from lumasched.downloads import safe_target

        assert self._out_dir is not None and self._downloader is not None
        url = generation.asset_url
        assert url is not None
        try:
            target = safe_target(self._out_dir, job.key, _extension(url, job.request.kind))
            result = await self._downloader.download(
                url, target, refresh_url=partial(self._fresh_url, generation.id)
            )
        except (LumaError, ValueError) as exc:
            error = exc if isinstance(exc, DownloadError) else DownloadError(str(exc))
            self._fail(job, error)
            return
        at = _now()
        job.timings = attrs.evolve(job.timings, downloaded=at)
        if not result.skipped:
            self._n["downloads"] += 1
            self._n["bytes_downloaded"] += result.bytes
        await self._write(
            self._jw().update,
            job.key,
            state="completed",
            path=str(result.path),
            sha256=result.sha256,
            bytes=result.bytes,
            downloaded_at=at,
        )
        self._complete(
            job,
            JobResult(
                job.key,
                generation,
                path=str(result.path),
                sha256=result.sha256,
                bytes=result.bytes,
                timings=job.timings,
            ),
        )

    async def _fresh_url(self, generation_id: str) -> str:
        generation = await self._client.get(generation_id)
        url = generation.asset_url
        if url is None:
            raise DownloadError(f"generation {generation_id} has no asset URL any more")
        return url

    # -- restoring from the journal ------------------------------------------------

    def _restore(
        self, record: JournalRecord, request: CreateRequest | None, *, priority: int
    ) -> Job:
        started = (
            record.generation_id is not None
            or record.intent_body is not None
            or record.state in TERMINAL_STATES
        )
        if not started:
            # Never sent: start afresh (with the new request, if one was given).
            if request is None:
                request = request_from_dict(record.kind, record.request)
            elif self._journal is not None:
                self._journal.update(
                    record.key,
                    request=request_to_dict(request),
                    kind=request.kind,
                    family=family_of(request.kind, request.model).value,
                )
            return self._start_new(
                request,
                key=record.key,
                priority=priority,
                depends_on=record.depends_on,
                record=False,
            )
        request = request_from_dict(record.kind, record.request)
        job = self._new_job(record.key, request, priority, record.depends_on)
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
            self._gen_owner[record.generation_id] = record.key
        assert self._tg is not None
        state = record.state
        if state == S.COMPLETED:
            generation = Generation.from_json(record.generation or {"id": record.generation_id})
            if self._out_dir is None or record.path is None:
                self._set_state(job, S.COMPLETED)
                self._finish(job, JobResult(record.key, generation, timings=job.timings), None)
            else:
                self._set_state(job, S.DOWNLOADING, resumed=True)
                self._tg.start_soon(self._verify_or_download, job, record, generation)
        elif state == S.CANCELLED or (state == S.FAILED and not _rerunnable(record)):
            self._set_state(job, S(state), resumed=True)
            error: LumaError
            if state == S.CANCELLED:
                error = JobCancelled(record.key)
            elif record.error_type == "GenerationFailed":
                error = GenerationFailed(record.generation_id, record.reason)
            else:
                error = JournalledFailure(record.key, record.error_type, record.reason)
            self._finish(job, None, error)
        elif record.generation_id:
            # Created before: poll it (never create again); hold a slot while it runs.
            self._set_state(job, S.SUBMITTED, resumed=True)
            self._tg.start_soon(self._follow_restored, job, record)
        else:
            self._set_state(job, S.CREATING, resumed=True)
            self._tg.start_soon(self._reconcile_restored, job, record)
        return job

    async def _follow_restored(self, job: Job, record: JournalRecord) -> None:
        assert record.generation_id is not None
        if record.state == "downloading" and record.generation:
            generation = Generation.from_json(record.generation)
            self._set_state(job, S.DOWNLOADING)
            await self._download(job, generation)
            return
        lease = record.lease_id or uuid.uuid4().hex
        self._poller.watch(
            record.generation_id,
            key=("restored", None, None),
            on_update=partial(self._on_update, job),
            on_error=partial(self._on_gone, job),
            learn=False,
        )
        with anyio.CancelScope() as scope:
            self._acquiring[job.key] = scope
            try:
                # The generation exists: it needs a slot, not a create-rate token.
                await self._limiter.acquire(job.family, lease, rate=False)
                self._held[job.key] = lease
                await self._limiter.mark_submitted(job.family, lease, record.generation_id)
            finally:
                self._acquiring.pop(job.key, None)
        if job.state in TERMINAL_STATES or job.state is S.DOWNLOADING:
            await self._release(job)

    async def _reconcile_restored(self, job: Job, record: JournalRecord) -> None:
        assert record.intent_body is not None and record.intent_at is not None
        lease = record.lease_id or uuid.uuid4().hex
        # Reconcile sends no create (if it finds none, the job queues for a new grant).
        await self._limiter.acquire(job.family, lease, rate=False)
        self._held[job.key] = lease
        self._n["ambiguous_creates"] += 1
        await self._reconcile(job, lease, record.intent_body, record.intent_at)

    async def _verify_or_download(
        self, job: Job, record: JournalRecord, generation: Generation
    ) -> None:
        from lumasched.downloads import sha256_file

        assert record.path is not None
        path = Path(record.path)
        digest = await anyio.to_thread.run_sync(_digest_if_file, path, sha256_file)
        if digest == record.sha256:
            self._complete(
                job,
                JobResult(
                    job.key,
                    generation,
                    path=record.path,
                    sha256=record.sha256,
                    bytes=record.bytes,
                    timings=job.timings,
                ),
            )
            return
        logger.info("job %s: %s missing or changed; downloading again", job.key, path)
        fresh = await self._client.get(generation.id)
        await self._download(job, fresh)

    # -- orphans (leases of dead holders, from a shared limiter) ---------------------

    async def _adopt_orphans_loop(self) -> None:
        while True:
            await self._clock.sleep(10.0)
            for family in Family:
                try:
                    orphans = await self._limiter.adopt_orphans(family)
                except Exception as exc:  # a shared limiter's outage must not stop the batch
                    logger.warning("adopting orphan leases failed: %s", exc)
                    continue
                for orphan in orphans:
                    self._follow_orphan(orphan.family, orphan.lease_id, orphan.generation_id)

    def _follow_orphan(self, family: Family, lease: str, generation_id: str) -> None:
        async def done(_: object) -> None:
            if getattr(_, "is_terminal", True):
                await self._release_lease(family, lease)

        if generation_id in self._gen_owner:
            return
        self._poller.watch(
            generation_id, key=("orphan", None, None), on_update=done, on_error=done, learn=False
        )

    # -- state, events, results ----------------------------------------------------

    def _set_state(self, job: Job, new: S, **info: Any) -> None:
        old = job._move(new)
        if new is not S.PENDING and new is not S.QUEUED:
            job.reason = info.get("reason")
        self._emit(job, old, **info)

    def _emit(self, job: Job, old: S, **info: Any) -> None:
        event = JobEvent(
            key=job.key,
            old=old,
            new=job.state,
            at=_now(),
            family=job.family,
            generation_id=job.generation_id,
            info=info,
        )
        logger.debug(
            "job %s: %s -> %s",
            job.key,
            old,
            job.state,
            extra={"job": job.key, "state": str(job.state), "generation_id": job.generation_id},
        )
        self.events.publish(event)

    def _complete(self, job: Job, result: JobResult) -> None:
        if job.done:
            return
        self._set_state(job, S.COMPLETED)
        self._finish(job, result, None)

    def _fail(self, job: Job, error: BaseException, *, journal: bool = True) -> None:
        if job.done:
            return
        logger.info("job %s failed: %s", job.key, error)
        if journal and self._journal is not None:
            self._update_soon(
                job.key,
                state="failed",
                reason=str(error),
                error_type=type(error).__name__,
            )
        self._set_state(job, S.FAILED, error=str(error))
        self._finish(job, None, error)

    def _defer(self, job: Job, reason: str, *, move: bool = True) -> None:
        if job.done:
            return
        if move and job.state in (S.PENDING, S.QUEUED, S.WAITING):
            job.reason = reason
            self._set_state(job, S.PENDING, reason=reason)
            if self._journal is not None:
                self._update_soon(job.key, state="pending", reason=reason)
        self._finish(job, None, JobDeferred(job.key, reason))

    def _finish(self, job: Job, result: JobResult | None, error: BaseException | None) -> None:
        if job.done:
            return
        job._finish(result, error)
        self._unfinished -= 1
        if self._unfinished == 0 and self._idle is not None:
            self._idle.set()
        self._on_dependency_done(job)

    def _cancel(self, job: Job) -> None:
        if job.state in (S.PENDING, S.WAITING, S.QUEUED):
            self._set_state(job, S.CANCELLED)
            if self._journal is not None:
                self._update_soon(job.key, state="cancelled")
            self._finish(job, None, JobCancelled(job.key))
        elif job.state in (S.SUBMITTED, S.DOWNLOADING):
            # The generation runs on; the poller still follows it to free the slot.
            self._set_state(job, S.CANCELLED)
            if self._journal is not None:
                self._update_soon(job.key, state="cancelled")
            self._finish(job, None, JobCancelled(job.key))
        # CREATING: decided when the create returns (see _created / _give_back).

    async def _release(self, job: Job) -> None:
        scope = self._acquiring.pop(job.key, None)
        if scope is not None:
            scope.cancel()
        lease = self._held.pop(job.key, None)
        if lease is not None:
            await self._release_lease(job.family, lease)

    async def _release_lease(self, family: Family, lease: str) -> None:
        with anyio.CancelScope(shield=True):
            await self._limiter.release(family, lease)

    # -- journal writes --------------------------------------------------------------

    def _jw(self) -> Journal:
        return self._journal if self._journal is not None else _NULL_JOURNAL  # type: ignore[return-value]

    async def _write(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """A journal write, in a worker thread (commits fsync); pending rows go first."""
        if self._journal is None:
            return
        await self._flush_rows()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))

    def _update_soon(self, key: str, **fields: Any) -> None:
        """Queue a journal update; queued updates are committed in batches, and
        always before any later direct write."""
        if self._journal is None:
            return
        self._updates.append((key, fields))
        assert self._rows_event is not None
        self._rows_event.set()

    async def _flush_rows(self) -> None:
        """Commit new jobs' rows and queued updates; returns once everything queued
        so far is committed (a concurrent flush is waited for)."""
        if self._journal is None:
            return
        if not self._new_rows and not self._updates and not self._flush_lock.locked():
            return
        journal = self._journal
        with anyio.CancelScope(shield=True):
            async with self._flush_lock:
                rows, self._new_rows = self._new_rows, []
                updates, self._updates = self._updates, []
                if rows:
                    await anyio.to_thread.run_sync(journal.add, rows)
                if updates:
                    await anyio.to_thread.run_sync(journal.update_many, updates)

    async def _journal_writer(self) -> None:
        """Batch new jobs into one transaction each round."""
        assert self._rows_event is not None
        while True:
            await self._rows_event.wait()
            self._rows_event = anyio.Event()
            await self._flush_rows()
            await anyio.sleep(0.05)

    # -- observability -------------------------------------------------------------

    def subscribe(self, buffer: int | None = None) -> MemoryObjectReceiveStream[JobEvent]:
        """A stream of every job event from now on (``async with`` / ``async for``)."""
        return self.events.subscribe(buffer)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously on every job event; returns a remover."""
        return self.events.add_listener(listener)

    def counters(self) -> Counters:
        """A snapshot of what the scheduler has done so far."""
        stats = self._poller.stats()
        return Counters(
            **self._n,
            polls=int(getattr(stats, "requests", 0)),
            events_dropped=self.events.dropped,
            families=self.events.family_counts(),
        )

    @property
    def poller(self) -> Poller:
        """The poll loop (give ``poller.hint`` to a ``CallbackReceiver``)."""
        return self._poller

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    def jobs(self) -> list[Job]:
        """Every job this scheduler knows, in submission order."""
        return sorted(self._jobs.values(), key=lambda j: j.seq)

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    @property
    def spent_cents(self) -> float:
        """Estimated cost of the jobs created in this session (with ``cost_of``)."""
        return self._spent


class JournalledFailure(LumaError):
    """A job that failed in an earlier run, as the journal recorded it."""

    def __init__(self, key: str, error_type: str | None, reason: str | None) -> None:
        self.key = key
        self.error_type = error_type
        self.reason = reason
        super().__init__(f"job {key!r} failed earlier ({error_type}): {reason}")


def _rerunnable(record: JournalRecord) -> bool:
    """A failed job worth picking up again on a new run."""
    if record.state != S.FAILED:
        return False
    # A finished generation whose download failed is fetched again; an
    # unresolved create is reconciled again (never blindly re-created).
    downloadable = record.error_type == "DownloadError" and record.generation_id is not None
    return downloadable or record.error_type == "AmbiguousCreateError"


class _NullJournal:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


_NULL_JOURNAL = _NullJournal()


def _match_body(request: CreateRequest) -> dict[str, Any]:
    """What reconcile compares with the server's ``request`` echo: the body sent,
    plus the source generation of upscale/audio (which travels in the path)."""
    body = request.to_body()
    source = getattr(request, "generation_id", None)
    if source is not None:
        body = {**body, "generation_id": source}
    return body


def _taken_anywhere(here: Callable[[str], bool], elsewhere: frozenset[str], gid: str) -> bool:
    return gid in elsewhere or here(gid)


def _fingerprint(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _extension(url: str, kind: str) -> str:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if "." in name:
        ext = name.rsplit(".", 1)[-1].lower()
        if ext.isalnum() and len(ext) <= 5:
            return ext
    return "jpg" if kind in ("image", "reframe_image") else "mp4"


def _digest_if_file(path: Path, digest: Callable[[Path], str]) -> str | None:
    return digest(path) if path.is_file() else None


def _puller(items: Iterable[Item] | AsyncIterable[Item]) -> Callable[[], Any]:
    if isinstance(items, AsyncIterable):
        iterator = aiter(items)
        return iterator.__anext__
    sync_iterator = iter(items)

    async def pull() -> Item:
        try:
            return next(sync_iterator)
        except StopIteration:
            raise StopAsyncIteration from None

    return pull
