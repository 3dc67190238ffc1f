"""The scheduler's writes to its journal: grouped into as few commits as order allows.

Every write joins one queue, in the order the scheduler made them, and the
queue is committed in transactions that each take everything waiting at that
moment (``Journal.apply``: one fsync for the lot). New jobs' rows and the state
changes nothing waits on are queued and committed by ``run()`` a moment later,
so a burst of submits shares a transaction. A write the next step depends on
(a create's intent before the create is sent, the generation id once it is
known) is awaited: it returns once a commit holding it is on disk, and it
never waits for a pause; while one commit runs, the writes that arrive are
committed together by the next ("group commit"). Since the queue is applied in
order, the journal never holds an update without its row, nor a later state
before an earlier one.

SQLite commits fsync, so commits run in a worker thread, shielded: a cancelled
task must not leave a job half recorded. Reads never touch SQLite on the event
loop either: ``open()`` reads the journal's records once in a worker thread
and watches it (``Journal.watch``): every commit, this writer's or a direct
one's (the CLI seeding rows from the claims), hands over the rows it changed,
as written, in the thread that committed. So ``get``, ``records`` and
``owners_of`` answer from memory, as last committed (memory grows with the
journal: a record is a few hundred bytes plus its generation). Without a journal every write is a
no-op, so callers need not check. Once the disk refuses a commit
(``StorageError``), every later write fails with that same error without
touching the journal: what is on disk stays exactly as last committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from lumasched.errors import StorageError
from lumasched.store.journal import (
    COLUMNS,
    Journal,
    JournalBatch,
    JournalRecord,
    NewJob,
    Row,
    Write,
)

__all__ = ["JournalWriter"]

logger = logging.getLogger("lumasched.engine.scheduler")

_KEY, _SEQ, _GENERATION_ID = (COLUMNS.index(c) for c in ("key", "seq", "generation_id"))

BATCH_PAUSE = 0.05
"""Seconds between batches: enough for a burst of submits to share one transaction."""


class _Waiter:
    """A write someone awaits: done once a commit that holds it has returned."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        # A flag, not an event: its writer waits on the lock, whose holder commits.
        self.done = False
        self.error: Exception | None = None


class JournalWriter:
    """Queues and commits the scheduler's journal writes (see the module docstring)."""

    def __init__(
        self, journal: Journal | None, *, disk_limiter: anyio.CapacityLimiter | None = None
    ) -> None:
        self.journal = journal
        self._disk = disk_limiter
        """Commits run under it (the scheduler shares it with the sealing of
        downloaded files: fsyncs side by side cost more CPU and make smaller
        groups of writes per commit)."""
        self._queue: list[tuple[Write, _Waiter | None]] = []
        self._queued = anyio.Event()
        self._lock = anyio.Lock()
        self.commits = 0
        """Transactions committed so far."""
        self._committed_hooks: list[tuple[int, Callable[[], object]]] = []
        self._enqueued = 0
        self._done_through = 0
        self.broken: StorageError | None = None
        """The error that stopped all writes (the disk refused a commit), if any."""
        self._rows: dict[str, Row] = {}
        """Each key's row as last committed, decoded only when read: most never are."""
        self._records_lock = threading.Lock()
        """The journal's worker threads update the records while the loop reads them."""
        self._owners: dict[str, set[str]] = {}
        """Generation id -> the keys of the records that hold it."""

    # -- reads, from memory ---------------------------------------------------------

    async def open(self) -> None:
        """Read the journal's records (in a worker thread) and follow its commits;
        call once, before any read, and ``close()`` when done."""
        journal = self.journal
        if journal is None:
            return
        self._remember(await anyio.to_thread.run_sync(journal.watch, self._remember))

    def close(self) -> None:
        """Stop following the journal's commits."""
        if self.journal is not None:
            self.journal.unwatch(self._remember)

    def get(self, key: str) -> JournalRecord | None:
        """The record of ``key`` as last committed (None without a journal)."""
        with self._records_lock:
            row = self._rows.get(key)
        return None if row is None else JournalRecord.from_row(row)

    def records(self) -> list[JournalRecord]:
        """Every record, in submission order, as last committed."""
        with self._records_lock:
            rows = list(self._rows.values())
        rows.sort(key=lambda row: int(row[_SEQ]))
        return [JournalRecord.from_row(row) for row in rows]

    def owners_of(self, generation_id: str) -> list[str]:
        """See ``Journal.owners_of``, as last committed."""
        with self._records_lock:
            return sorted(self._owners.get(generation_id, ()))

    def _remember(self, rows: list[Row]) -> None:
        """Called by the journal, in the thread that committed ``rows``."""
        with self._records_lock:
            for row in rows:
                key = row[_KEY]
                old = self._rows.get(key)
                if old is not None and old[_GENERATION_ID] is not None:
                    self._owners.get(old[_GENERATION_ID], set()).discard(key)
                self._rows[key] = row
                if row[_GENERATION_ID] is not None:
                    self._owners.setdefault(row[_GENERATION_ID], set()).add(key)

    # -- queued, committed in batches ---------------------------------------------

    def add_soon(self, row: NewJob) -> None:
        self._soon(partial(JournalBatch.add, jobs=(row,)))

    def update_soon(self, key: str, **fields: Any) -> None:
        self._soon(partial(JournalBatch.update, key=key, **fields))

    def _soon(self, write: Write) -> None:
        if self.journal is None:
            return
        self._queue.append((write, None))
        self._enqueued += 1
        self._queued.set()

    def after_committed(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once every write queued so far is committed (at once
        when nothing is pending, or without a journal)."""
        if self._done_through >= self._enqueued:
            callback()
        else:
            self._committed_hooks.append((self._enqueued, callback))

    async def run(self) -> None:
        """Commit what was queued, one batch per round (runs until cancelled)."""
        while True:
            await self._queued.wait()
            self._queued = anyio.Event()
            await self.flush()
            await anyio.sleep(BATCH_PAUSE)

    async def flush(self) -> None:
        """Commit everything queued so far; returns once it is committed (a commit
        already running is waited for)."""
        if self.journal is None:
            return
        if not self._queue and not self._lock.locked():
            return
        await self._commit(_nothing)

    # -- committed at once ----------------------------------------------------------

    async def record_intent(
        self,
        key: str,
        *,
        lease_id: str,
        body: dict[str, Any],
        sent_at: float,
        owner: str,
        digest: str | None = None,
    ) -> None:
        await self._commit(
            partial(
                JournalBatch.record_intent,
                key=key,
                lease_id=lease_id,
                body=body,
                sent_at=sent_at,
                owner=owner,
                digest=digest,
            )
        )

    async def clear_intent(self, key: str, *, state: str, reason: str | None) -> None:
        await self._commit(partial(JournalBatch.clear_intent, key=key, state=state, reason=reason))

    async def record_submitted(self, key: str, generation_id: str) -> None:
        await self._commit(
            partial(JournalBatch.record_submitted, key=key, generation_id=generation_id)
        )

    async def update(self, key: str, **fields: Any) -> None:
        await self._commit(partial(JournalBatch.update, key=key, **fields))

    async def _commit(self, write: Write) -> None:
        """Queue ``write`` and return once it is committed (raising what it raised)."""
        journal = self.journal
        if journal is None:
            return
        waiter = _Waiter()
        self._queue.append((write, waiter))
        self._enqueued += 1
        with anyio.CancelScope(shield=True):
            while not waiter.done:
                async with self._lock:
                    if waiter.done:
                        break  # the commit before took it along
                    await self._commit_queue(journal)
        if waiter.error is not None:
            raise waiter.error

    async def _commit_queue(self, journal: Journal) -> None:
        """Commit all that is queued, in one transaction (the lock is held)."""
        batch, self._queue = self._queue, []
        through = self._enqueued
        try:
            if self.broken is not None:
                # Later writes could depend on the lost ones (a row never added):
                # attempt none, so the only error anyone sees is the disk's.
                raise self.broken
            errors = await anyio.to_thread.run_sync(
                journal.apply, [w for w, _ in batch], limiter=self._disk
            )
        except Exception as exc:
            # The commit itself failed: nothing of the batch is recorded.
            if isinstance(exc, StorageError):
                self.broken = exc
            errors = [exc] * len(batch)
        self.commits += 1
        self._done_through = through
        unawaited: Exception | None = None
        for (_, waiter), error in zip(batch, errors, strict=True):
            if waiter is not None:
                waiter.error = error
                waiter.done = True
            elif error is not None and unawaited is None:
                unawaited = error
        self._run_hooks()
        if unawaited is not None:
            # A queued write no one awaits failed (a job missing from the journal):
            # the others are committed; the scheduler stops, as for any journal error.
            raise unawaited

    def _run_hooks(self) -> None:
        hooks = self._committed_hooks
        if not hooks:
            return
        due = [fn for through, fn in hooks if through <= self._done_through]
        self._committed_hooks = [(t, fn) for t, fn in hooks if t > self._done_through]
        for fn in due:
            try:
                fn()
            except Exception:
                logger.exception("journal commit hook %r failed", fn)


def _nothing(batch: JournalBatch) -> None:
    return None
