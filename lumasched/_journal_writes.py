"""The scheduler's writes to its journal: batched where order allows.

New jobs' rows and the state changes nothing waits on are queued and committed
in batches (one transaction per round of ``run()``). A write the next step
depends on (a create's intent before the create is sent, the generation id
once it is known) is committed at once, but only after everything queued
before it, so the journal never holds an update without its row. SQLite
commits fsync, so writes run in a worker thread, shielded: a cancelled task
must not leave a job half recorded.

Without a journal every write is a no-op, so callers need not check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from lumasched.journal import Journal, NewJob

__all__ = ["JournalWriter"]

BATCH_PAUSE = 0.05
"""Seconds between batches: enough for a burst of submits to share one transaction."""


class JournalWriter:
    """Queues and commits the scheduler's journal writes (see the module docstring)."""

    def __init__(self, journal: Journal | None) -> None:
        self.journal = journal
        self._rows: list[NewJob] = []
        self._updates: list[tuple[str, dict[str, Any]]] = []
        self._queued = anyio.Event()
        self._lock = anyio.Lock()

    # -- queued, committed in batches ---------------------------------------------

    def add_soon(self, row: NewJob) -> None:
        if self.journal is None:
            return
        self._rows.append(row)
        self._queued.set()

    def update_soon(self, key: str, **fields: Any) -> None:
        if self.journal is None:
            return
        self._updates.append((key, fields))
        self._queued.set()

    async def run(self) -> None:
        """Commit what was queued, one batch per round (runs until cancelled)."""
        while True:
            await self._queued.wait()
            self._queued = anyio.Event()
            await self.flush()
            await anyio.sleep(BATCH_PAUSE)

    async def flush(self) -> None:
        """Commit everything queued so far; returns once it is committed (a flush
        already running is waited for)."""
        journal = self.journal
        if journal is None:
            return
        if not self._rows and not self._updates and not self._lock.locked():
            return
        with anyio.CancelScope(shield=True):
            async with self._lock:
                rows, self._rows = self._rows, []
                updates, self._updates = self._updates, []
                if rows:
                    await anyio.to_thread.run_sync(journal.add, rows)
                if updates:
                    await anyio.to_thread.run_sync(journal.update_many, updates)

    # -- committed at once ----------------------------------------------------------

    async def record_intent(
        self, key: str, *, lease_id: str, body: dict[str, Any], sent_at: float, owner: str
    ) -> None:
        if self.journal is not None:
            await self._commit(
                partial(
                    self.journal.record_intent,
                    key,
                    lease_id=lease_id,
                    body=body,
                    sent_at=sent_at,
                    owner=owner,
                )
            )

    async def clear_intent(self, key: str, *, state: str, reason: str | None) -> None:
        if self.journal is not None:
            await self._commit(partial(self.journal.clear_intent, key, state=state, reason=reason))

    async def record_submitted(self, key: str, generation_id: str) -> None:
        if self.journal is not None:
            await self._commit(partial(self.journal.record_submitted, key, generation_id))

    async def update(self, key: str, **fields: Any) -> None:
        if self.journal is not None:
            await self._commit(partial(self.journal.update, key, **fields))

    async def _commit(self, write: Callable[[], object]) -> None:
        await self.flush()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(write)
