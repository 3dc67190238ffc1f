"""The concurrency slots held by the scheduler's jobs.

A job holds one limiter lease from the moment its create is granted (or its
generation is restored from the journal) until that generation ends on the
server, even when the job itself was cancelled meanwhile: the account's
concurrency is what the server counts, not what the caller still wants.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from lumasched.api import Family
from lumasched.engine.jobs import Job
from lumasched.limits import Limiter

__all__ = ["Slots"]


class Slots:
    """Which job holds which lease of ``limiter``; ``released(job)`` is called
    when a job gives its lease back."""

    def __init__(self, limiter: Limiter, *, released: Callable[[Job], object]) -> None:
        self.limiter = limiter
        self._released = released
        self._held: dict[str, str] = {}
        """job key -> lease id"""
        self._acquiring: dict[str, anyio.CancelScope] = {}
        """job key -> the scope of a restored job's wait for a slot"""

    def hold(self, job: Job, lease: str) -> None:
        self._held[job.key] = lease

    def holding(self, key: str) -> bool:
        """Whether the job ``key`` holds a lease (or waits for one)."""
        return key in self._held or key in self._acquiring

    async def acquire_for_generation(self, job: Job, lease: str, generation_id: str) -> None:
        """Take a slot for a generation that already exists (restored from the
        journal). Releasing the job while this waits ends the wait."""
        with anyio.CancelScope() as scope:
            self._acquiring[job.key] = scope
            try:
                # The generation exists: it needs a slot, not a create-rate token.
                await self.limiter.acquire(job.family, lease, rate=False)
                self._held[job.key] = lease
                await self.limiter.mark_submitted(job.family, lease, generation_id)
            finally:
                self._acquiring.pop(job.key, None)

    async def release(self, job: Job) -> None:
        scope = self._acquiring.pop(job.key, None)
        if scope is not None:
            scope.cancel()
        lease = self._held.pop(job.key, None)
        if lease is not None:
            await self.release_lease(job.family, lease)
        if scope is not None or lease is not None:
            self._released(job)

    async def release_lease(self, family: Family, lease: str) -> None:
        # Shielded: a slot given back late (or never) stalls the whole family.
        with anyio.CancelScope(shield=True):
            await self.limiter.release(family, lease)
