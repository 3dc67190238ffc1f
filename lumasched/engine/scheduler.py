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

``Scheduler`` owns the lifecycle and the public surface; the work is done by
collaborators it wires together, each in its own module of ``lumasched.engine``
(the three that work on jobs share one ``_context.EngineContext``):

=========================  ==========================================================
``_jobtable.JobTable``     jobs, their states and dependencies, the ready queues
``_creating.Creator``      dispatchers, creates, 429s, ambiguous creates, reconcile
``_following.Follower``    polling created generations to their end, downloads
``_restore.Restorer``      picking up a journal's jobs where they had got to
``_slots.Slots``           which job holds which limiter lease
``_bulk``                  ``as_completed`` / ``map``: lazy, bounded feeding
``store._writes``          batched, ordered journal writes (``JournalWriter``)
=========================  ==========================================================
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVarTuple

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched._config import DEFAULT_JOB_TIMEOUT, DEFAULT_MAX_ASSET_SIZE
from lumasched.api import CreateRequest, Family
from lumasched.api._models import REF_PREFIX
from lumasched.engine import _bulk
from lumasched.engine._bulk import Item
from lumasched.engine._context import EngineContext
from lumasched.engine._creating import Budget, Creator, ReconcileTimes
from lumasched.engine._following import Follower
from lumasched.engine._jobtable import JobTable
from lumasched.engine._reachability import DEFAULT_UNREACHABLE_GIVE_UP, Outage, Reachability
from lumasched.engine._reconcile import DEFAULT_SKEW
from lumasched.engine._restore import Restorer
from lumasched.engine._slots import Slots
from lumasched.engine.events import Counters, EventHub, Listener
from lumasched.engine.jobs import Job, JobEvent, JobResult, JobState
from lumasched.errors import JournalledFailure, LumaError, StorageError
from lumasched.limits import Limiter, Limits
from lumasched.store._storage import first_storage_error
from lumasched.store._writes import JournalWriter
from lumasched.store.journal import Journal

if TYPE_CHECKING:
    from lumasched.api import LumaClient
    from lumasched.engine._claims import ItemClaims
    from lumasched.engine._inputs import InputResolver
    from lumasched.engine.downloads import Downloader
    from lumasched.engine.poller import Poller

__all__ = ["REF_PREFIX", "JournalledFailure", "Scheduler"]

logger = logging.getLogger("lumasched.engine.scheduler")

DEFAULT_MAX_PENDING = 256
DEFAULT_RECONCILE_SETTLE = 120.0
DEFAULT_RECONCILE_GIVE_UP = 900.0
DEFAULT_RECONCILE_INTERVAL = 5.0
DEFAULT_DOWNLOADS = 16
"""Assets the default ``Downloader`` fetches at once: small files that finish
together are sealed in one batch (see ``lumasched.engine.downloads``), and at
4 at once the batches, and the journal commits that follow them, were half as
large (client CPU per job 2.2 against 1.7 ms at 2,000 zero-latency jobs)."""

Ts = TypeVarTuple("Ts")


class Scheduler:
    """Runs generation jobs within the account's limits; an async context manager.

    Arguments:
        client: an open ``LumaClient``.
        limiter: the ``Limiter`` to share (default: an ``InProcessLimiter`` of the
            Build tier, owned by this scheduler).
        journal: record every job there, and resume what it already holds.
        out_dir: download each finished asset to ``out_dir/<key>.<ext>``.
        poller, downloader: override the defaults (``Poller(client)``,
            ``Downloader(client, max_concurrent=16)``).
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
        inputs: resolves local files in requests (``file://`` URLs, ``Path``
            values) to URLs the server can fetch, just before each create is sent
            (``lumasched.inputs.Uploads``); without it a request naming a local
            file fails without being sent.
        unreachable_give_up: how many seconds the API may stay unreachable
            (connection refused, DNS, TLS, connect timeouts) before creating stops.
            Until then jobs wait and creates are retried with backoff (see
            ``outage()``); generations already created keep being polled.
        job_timeout: seconds a generation may take, from its create (or its
            pick-up from the journal), to reach a terminal state; past it the
            job fails with ``GenerationTimeout`` and the journal keeps its
            generation id, so a later run polls it again (``None``: no limit).
            An undocumented state counts as still running.
        max_asset_size: the largest asset downloaded, in bytes (with
            ``out_dir``; a larger one fails its job with ``AssetTooLargeError``).

    Errors that are not a job's own never fail it. When the API rejects the key
    (401/403), refuses every create (402, a 404 from a wrong base URL, ...), or
    stays unreachable past ``unreachable_give_up``, the scheduler creates
    nothing more: every job not yet created, and every generation being
    followed, stays in the journal where it was (``pending``, ``submitted``) and
    its handle raises that one error (``AuthenticationError``,
    ``PermissionDeniedError``, ``APIUnreachableError``, ...; also ``halted``).
    A later session with the cause fixed picks them all up.

    A generation that completes without an asset URL is re-read a few times
    (the asset may appear a moment later); if none appears its job fails with
    ``MissingAssetError``, never completes without its file. A journal the disk
    refuses to write raises ``StorageError`` out of the ``async with`` block:
    without its journal the scheduler cannot promise that nothing is created
    twice, so it stops at once.

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
        inputs: InputResolver | None = None,
        unreachable_give_up: float = DEFAULT_UNREACHABLE_GIVE_UP,
        job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
        max_asset_size: int | None = DEFAULT_MAX_ASSET_SIZE,
    ) -> None:
        if budget_cents is not None and cost_of is None:
            raise ValueError("budget_cents needs cost_of to estimate what a request costs")
        if job_timeout is not None and not job_timeout > 0:
            raise ValueError(f"job_timeout must be > 0 seconds (or None), got {job_timeout!r}")
        self._client = client
        self._own_limiter = limiter is None
        if limiter is None:
            from lumasched.limits import InProcessLimiter

            limiter = InProcessLimiter(Limits(), clock=clock)
        self._limiter: Limiter = limiter
        out = None if out_dir is None else Path(out_dir)
        if poller is None:
            from lumasched.engine.poller import Poller

            poller = Poller(client, clock=clock)
        self._poller = poller
        self._reachability = Reachability(
            getattr(client, "base_url", ""), give_up=unreachable_give_up, clock=clock
        )
        # The journal's commits and the sealing of downloaded files take turns:
        # fsyncs side by side contend in the file system and cost more CPU.
        disk = anyio.CapacityLimiter(1)
        if downloader is None and out is not None:
            from lumasched.engine.downloads import Downloader

            downloader = Downloader(
                client,
                max_concurrent=DEFAULT_DOWNLOADS,
                max_size=max_asset_size,
                disk_limiter=disk,
            )
        self.max_pending = max_pending
        self._resume_on_enter = resume
        self._tg: TaskGroup | None = None
        self._host: TaskGroup | None = None
        self._workers_done = anyio.Event()
        self._closed = False
        self.events = EventHub()

        writes = JournalWriter(journal, disk_limiter=disk)
        self._writes = writes
        self._table = table = JobTable(
            self.events,
            writes,
            from_journal=self._from_journal,
            # a reconcile looks back reconcile_skew before a create at most
            # reconcile_give_up old (plus a minute of slack)
            owner_memory=reconcile_give_up + reconcile_skew + 60.0,
            clock=clock,
        )
        slots = Slots(limiter, released=table.release)
        table.holds_slot = slots.holding
        ctx = EngineContext(
            client=client,
            table=table,
            slots=slots,
            writes=writes,
            clock=clock,
            spawn=self._spawn,
            out_dir=out,
        )
        self._downloader = downloader
        self._follower = follower = Follower(ctx, poller, downloader, job_timeout=job_timeout)
        self._creator = creator = Creator(
            ctx,
            follower=follower,
            budget=Budget(budget_cents, cost_of),
            times=ReconcileTimes(
                settle=reconcile_settle,
                give_up=reconcile_give_up,
                interval=reconcile_interval,
                skew=reconcile_skew,
            ),
            owner=owner or f"{socket.gethostname()}:{os.getpid()}",
            callback_url=callback_url,
            claims=claims,
            inputs=inputs,
            reachability=self._reachability,
        )
        # What the poll loop learns about the API (a rejected key, an outage) counts too.
        poller.on_status = creator.status_checked
        self._restorer = Restorer(ctx, follower=follower, creator=creator)

    def __repr__(self) -> str:
        return f"<Scheduler jobs={len(self._table.jobs)} unfinished={self._table.unfinished}>"

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None or self._closed:
            raise RuntimeError("a Scheduler can be entered only once")
        # Every later read of the journal answers from memory (never SQLite on the loop).
        await self._writes.open()
        if self._own_limiter:
            try:
                await self._limiter.__aenter__()
            except BaseException:
                self._writes.close()
                raise
        # The entering task owns `host`; the scheduler's own tasks run in a task
        # group inside it, so that stopping them (from any task) never cancels
        # the code in the caller's `async with` block.
        host = anyio.create_task_group()
        await host.__aenter__()
        try:
            self._tg = await host.start(self._run_workers)
        except BaseException as exc:
            host.cancel_scope.cancel()
            self._writes.close()
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
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._poller.run)
                tg.start_soon(self._writes.run)
                tg.start_soon(self._follower.adopt_orphans)
                for family in Family:
                    tg.start_soon(self._creator.dispatch, family)
                task_status.started(tg)
                await anyio.sleep_forever()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None  # one level of grouping, as before
            raise
        finally:
            self._workers_done.set()

    def _spawn(self, fn: Callable[[*Ts], Coroutine[Any, Any, object]], *args: *Ts) -> None:
        """Start ``fn(*args)`` among the scheduler's own tasks."""
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        try:
            try:
                if exc_type is None:
                    await self.join()
                else:
                    self._table.stop("shutdown")
            finally:
                suppress = await self._exit_host(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The disk refused the journal: every task that wrote saw the same error.
            # One StorageError is what the caller can act on, not a tree of them.
            storage, rest = group.split(StorageError)
            if storage is None or rest is not None:
                raise
            raise first_storage_error(storage) from None
        return suppress

    async def _close(self) -> None:
        """Stop every task of the scheduler and wait for them to end (from any
        task: the task group itself is exited only by ``__aexit__``, in the task
        that entered it, whatever scopes the caller has opened since)."""
        workers = self._tg
        if workers is None:
            return
        if not self._closed:
            self._closed = True
            try:
                self._table.defer_all("shutdown")
            finally:
                workers.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._workers_done.wait()
            try:
                await self._writes.flush()
            finally:
                self._writes.close()
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
            except BaseExceptionGroup as group:
                # The task group wraps the caller's own exception: let it leave the
                # `async with` block as itself, as it entered.
                if exc is None or list(group.exceptions) != [exc]:
                    raise
                suppress = False
            finally:
                self._tg = None
                if self._own_limiter:
                    with anyio.CancelScope(shield=True):
                        await self._limiter.__aexit__(None, None, None)
        return suppress

    async def join(self) -> None:
        """Wait until every submitted job has finished (or been deferred)."""
        await self._table.join()

    async def stop_creating(self) -> None:
        """Send no more creates. Queued and waiting jobs stay ``pending`` in the
        journal (their handles raise ``JobDeferred("stopped")``); creates already
        sent and generations in flight carry on."""
        self._table.stop("stopped")
        await self._writes.flush()

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

    # -- submitting --------------------------------------------------------------

    @staticmethod
    def ref(job: Job | str) -> str:
        """A placeholder generation id standing for ``job``'s generation, for use in
        keyframes or as an upscale/audio source. The dependent job waits for it.

        For a handle of a job that has completed, this is its generation id
        itself, so it works even after the scheduler has released the job.
        """
        if isinstance(job, Job) and job.state is JobState.COMPLETED and job.generation_id:
            return job.generation_id
        return REF_PREFIX + (job if isinstance(job, str) else job.key)

    def submit(
        self,
        request: CreateRequest,
        *,
        key: str | None = None,
        priority: int = 0,
        depends_on: Iterable[Job | str] = (),
    ) -> Job:
        """Schedule ``request``; returns its ``Job`` at once. An invalid request
        raises ``ValidationError`` here, and nothing is scheduled.

        ``depends_on`` takes keys or handles (the handle of an ended job counts
        even once the scheduler has released it). ``key`` identifies the job in
        the journal: submitting a key the journal already holds resumes that job
        (polling, reconciling or downloading as needed) instead of creating it
        again, and submitting a key twice returns
        the same ``Job`` while the scheduler holds it (see ``get``); once it has
        ended and been released, the journal answers for it (a done handle with
        the same outcome). Without a journal, a released key is forgotten:
        submitting it again starts a new job. References made with ``ref()`` (or
        ``depends_on``) must name jobs submitted earlier (or, with a journal,
        recorded there).
        """
        self._check_open()
        # A bad request raises here, before a handle exists, not when it is awaited.
        request.validate()
        if key is None:
            key = uuid.uuid4().hex[:12]
        existing = self._table.jobs.get(key)
        if existing is not None:
            return existing
        restored = self._restorer.restore_key(key, request, priority=priority)
        if restored is not None:
            return restored
        return self._table.start(request, key=key, priority=priority, depends_on=depends_on)

    def resume(self) -> list[Job]:
        """Pick up every unfinished job of the journal (without re-submitting them)."""
        self._check_open()
        return self._restorer.resume()

    def _from_journal(self, key: str) -> Job | None:
        return self._restorer.dependency(key)

    def as_completed(
        self, items: Iterable[Item] | AsyncIterable[Item], *, max_pending: int | None = None
    ) -> AsyncIterator[Job]:
        """Submit ``items`` (requests, or ``(key, request)`` pairs) and yield each
        ``Job`` as it finishes. At most ``max_pending`` unfinished jobs exist at a
        time: the input is read lazily, so it may be endless or huge."""
        return _bulk.as_completed(self.submit, items, max_pending or self.max_pending)

    def map(
        self,
        items: Iterable[Item] | AsyncIterable[Item],
        *,
        max_pending: int | None = None,
        return_exceptions: bool = False,
    ) -> AsyncIterator[JobResult | LumaError]:
        """Like ``as_completed`` but yields results in input order; a failed job
        raises its error (or is yielded as the error with ``return_exceptions``)."""
        return _bulk.in_order(
            self.submit,
            items,
            max_pending or self.max_pending,
            return_exceptions=return_exceptions,
        )

    # -- observability -------------------------------------------------------------

    def subscribe(self, buffer: int | None = None) -> MemoryObjectReceiveStream[JobEvent]:
        """A stream of the job events from now on (``async with`` / ``async for``).

        It holds up to ``buffer`` events (default 10,000; 0: unbounded): a reader
        that falls further behind misses the newer ones, counted in
        ``counters().events_dropped``. ``add_listener`` sees every event."""
        return self.events.subscribe(buffer)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously on every job event; returns a remover."""
        return self.events.add_listener(listener)

    def counters(self) -> Counters:
        """A snapshot of what the scheduler has done so far."""
        stats = self._poller.stats()
        return Counters(
            **self._creator.counts,
            downloads=self._follower.downloads,
            bytes_downloaded=self._follower.bytes_downloaded,
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

    @property
    def client(self) -> LumaClient:
        return self._client

    @property
    def downloader(self) -> Downloader | None:
        """The downloader (None when the scheduler keeps no files)."""
        return self._downloader

    def jobs(self) -> list[Job]:
        """The jobs this scheduler holds, in submission order: every unfinished one,
        and those that ended but are still needed (see ``get``)."""
        return sorted(self._table.jobs.values(), key=lambda j: j.seq)

    def get(self, key: str) -> Job | None:
        """The job ``key``, or None.

        A job that ended (completed, failed, cancelled) is released from the
        scheduler's table once no unfinished job depends on it and its end is
        in the journal, so that a long-lived scheduler's memory stays flat;
        handles you hold stay valid. For a released key, ``get`` answers from
        the journal (a done handle built from its record) or, without a
        journal, returns None.
        """
        job = self._table.jobs.get(key)
        if job is None:
            job = self._restorer.ended(key)
        return job

    @property
    def halted(self) -> LumaError | None:
        """The error that stopped creating for this session (a rejected key, an API
        unreachable too long), or None. Every job parked because of it raises it."""
        return self._table.halted

    def outage(self) -> Outage | None:
        """Since when, and why, the API cannot be reached (None while it answers)."""
        return self._reachability.outage()

    @property
    def spent_cents(self) -> float:
        """Estimated cost of the jobs created in this session (with ``cost_of``)."""
        return self._creator.budget.spent
