"""``lumasched run --redis``: one manifest worked by many hosts through item claims.

Each host reads the whole manifest in the same order and claims each item in
Redis (``lumasched.claims``) just before handing it to its scheduler, so the
hosts share the items between them as they go. An item another live host
holds is set aside; once the rest is done, the set-aside items are watched
until they finish there (counted as done elsewhere) or their holder's lease
expires (claimed here and continued from the claim's record: its generation
polled, its unanswered create reconciled, never created again).

The local journal stays the first record of what this host did: an item taken
over from another host is written into it from the claim before the scheduler
sees it, and an item another host finished that a local item builds on is
written into it as completed (without a file), so the scheduler resolves the
reference.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from lumasched._results import failure_reason
from lumasched.api import request_to_dict
from lumasched.claims import Claim, ClaimRecord, ClaimStatus, ClaimStore, manifest_id
from lumasched.errors import ClaimLost
from lumasched.jobs import Job, JobDeferred
from lumasched.journal import Journal, NewJob
from lumasched.limits import Family
from lumasched.manifest import Manifest, ManifestItem

if TYPE_CHECKING:
    from lumasched._config import Settings
    from lumasched.api import CreateRequest
__all__ = ["ClaimedRun", "cluster_view"]

logger = logging.getLogger("lumasched.claims")

PEEK_CHUNK = 1000


class ClaimedRun:
    """Drives one host's share of a manifest (see the module docstring).

    ``items()`` is what to submit; ``record(job)`` publishes each finished job
    to the other hosts. ``outcome`` is the runner's ``RunOutcome``: items other
    hosts finished are counted there (completed, or failed with the reason and
    host).
    """

    def __init__(
        self,
        manifest: Manifest,
        claims: ClaimStore,
        journal: Journal,
        *,
        outcome: Any,
        stopping: anyio.Event,
        note: Callable[[str], None],
    ) -> None:
        self._manifest = manifest
        self._claims = claims
        self._journal = journal
        self._outcome = outcome
        self._stopping = stopping
        self._note = note
        self._waiting: dict[str, ManifestItem] = {}
        """Items set aside: another host holds them (or an item they build on)."""
        self._elsewhere: dict[str, tuple[ManifestItem, ClaimRecord]] = {}
        """Items other hosts finished."""
        self.finished_elsewhere = 0
        self._poll = min(1.0, max(0.05, claims.ttl / 4))

    async def items(self) -> AsyncIterator[tuple[str, CreateRequest]]:
        """What this host should submit, as ``(item id, request)``: first its share
        of the manifest, then items it takes over from hosts that stopped."""
        async for ready in self._first_pass():
            yield ready
        if self._waiting and not self._stopped():
            self._note(
                f"{len(self._waiting)} item(s) held by other hosts: "
                "waiting for them to finish there (or to take them over)"
            )
        while self._waiting and not self._stopped():
            for ready in await self._next_round():
                yield ready
        for item in self._waiting.values():
            self._outcome.not_run["held by another host"] += 1
            self._family_counts(item.family)["not run"] += 1
        if self.finished_elsewhere:
            self._note(f"{self.finished_elsewhere} item(s) were finished by other hosts")

    def _stopped(self) -> bool:
        return self._stopping.is_set() or self._claims.lost

    # -- claiming -------------------------------------------------------------------

    async def _first_pass(self) -> AsyncIterator[tuple[str, CreateRequest]]:
        for item in self._manifest.submission_order():
            if self._stopped():
                return
            ready = await self._gate(item)
            if ready is not None:
                yield ready

    async def _next_round(self) -> list[tuple[str, CreateRequest]]:
        """Wait until some set-aside item finished elsewhere or can be taken over."""
        while not self._stopping.is_set():
            with anyio.move_on_after(self._poll):
                await self._stopping.wait()
            ready: list[tuple[str, CreateRequest]] = []
            keys = list(self._waiting)
            for start in range(0, len(keys), PEEK_CHUNK):
                seen = await self._claims.peek(keys[start : start + PEEK_CHUNK])
                for key in keys[start : start + PEEK_CHUNK]:
                    claim = seen.get(key)
                    if claim is not None and claim.status is ClaimStatus.TAKEN:
                        continue
                    item = self._waiting.pop(key)
                    if claim is not None and claim.status is ClaimStatus.DONE:
                        self._done_elsewhere(item, claim.record)
                        continue
                    got = await self._gate(item)
                    if got is not None:
                        ready.append(got)
            if ready or not self._waiting:
                return ready
        return []

    async def _gate(self, item: ManifestItem) -> tuple[str, CreateRequest] | None:
        """Claim ``item`` if it can start here; returns what to submit, or None."""
        for dep in item.deps:
            if dep in self._waiting:
                self._waiting[item.id] = item  # builds on an item still running elsewhere
                return None
        claim = await self._claims.claim(item.id)
        if claim.status is ClaimStatus.TAKEN:
            self._waiting[item.id] = item
            return None
        if claim.status is ClaimStatus.DONE:
            if await anyio.to_thread.run_sync(self._finished_here, item.id, claim.record):
                return item.id, item.resolve(_ref)  # reported again from the journal
            self._done_elsewhere(item, claim.record)
            return None
        for dep in item.deps:
            if dep in self._elsewhere:
                await anyio.to_thread.run_sync(self._seed_finished, *self._elsewhere[dep])
        request = item.resolve(_ref)
        if claim.status is ClaimStatus.ADOPTED:
            await anyio.to_thread.run_sync(self._seed_adopted, item, request, claim.record)
        return item.id, request

    # -- the local journal, seeded from the claims -------------------------------------

    def _add_row(self, key: str, request: CreateRequest, deps: tuple[str, ...]) -> None:
        from lumasched.limits import family_of

        self._journal.add(
            [
                NewJob(
                    key=key,
                    kind=request.kind,
                    request=request_to_dict(request),
                    family=family_of(request.kind, request.model).value,
                    depends_on=deps,
                )
            ]
        )

    def _seed_adopted(self, item: ManifestItem, request: CreateRequest, claim: ClaimRecord) -> None:
        """Write what the previous holder did into our journal, so the scheduler
        polls its generation or reconciles its create instead of creating again."""
        local = self._journal.get(item.id)
        if local is not None and (local.generation_id or local.finished):
            return  # we got at least as far ourselves
        if claim.generation_id:
            if local is None:
                self._add_row(item.id, request, item.deps)
            self._journal.update(
                item.id,
                state="submitted",
                generation_id=claim.generation_id,
                lease_id=claim.lease_id,
                reason=None,
            )
        elif claim.intent_body is not None and claim.intent_at is not None:
            if local is None:
                self._add_row(item.id, request, item.deps)
            self._journal.record_intent(
                item.id,
                lease_id=claim.lease_id or "",
                body=claim.intent_body,
                sent_at=claim.intent_at,
                owner=claim.owner,
            )
        else:
            return
        logger.info(
            "item %s: taken over from %s (%s)",
            item.id,
            claim.owner,
            claim.generation_id or "intent",
        )

    def _finished_here(self, key: str, claim: ClaimRecord) -> bool:
        """Did this host finish the item (in an earlier run)? Then a rerun lists it
        in results.jsonl again, as without Redis."""
        local = self._journal.get(key)
        return (
            local is not None
            and local.finished
            and local.state == claim.state
            and local.path == claim.path
            and claim.host == self._claims.host
        )

    def _seed_finished(self, item: ManifestItem, claim: ClaimRecord) -> None:
        """An item another host finished, as a finished row (no file here)."""
        key = item.id
        local = self._journal.get(key)
        if local is not None and local.finished:
            return
        if local is None:
            self._add_row(key, item.resolve(_ref), item.deps)
        if claim.state == "completed":
            self._journal.update(
                key,
                state="completed",
                generation_id=claim.generation_id,
                generation={"id": claim.generation_id},
                path=None,
            )
        else:
            self._journal.update(
                key,
                state="failed",
                reason=f"{claim.reason} (on {claim.host})",
                error_type=claim.error_type or "failed elsewhere",
            )

    # -- outcomes ------------------------------------------------------------------------

    async def record(self, job: Job, *, parked: bool = False) -> bool:
        """Publish a finished job to the other hosts; False: not this host's to report.
        ``parked``: not run here for a cause not the item's (a rejected key, an
        unreachable API): its claim is released, as for a deferred job."""
        error = job.error
        if isinstance(error, ClaimLost):
            # Another host took the item over (this one was paused past its lease).
            self._outcome.not_run["taken over by another host"] += 1
            self._family_counts(job.family)["not run"] += 1
            return False
        if error is None:
            result = await job.result()
            await self._claims.complete(
                job.key,
                generation_id=result.generation.id,
                path=result.path,
                sha256=result.sha256,
                bytes=result.bytes,
            )
        elif parked or isinstance(error, JobDeferred):
            await self._claims.release(job.key)
        else:
            await self._claims.fail(
                job.key, reason=failure_reason(error), error_type=type(error).__name__
            )
        return True

    def _done_elsewhere(self, item: ManifestItem, record: ClaimRecord) -> None:
        self._elsewhere[item.id] = (item, record)
        counts = self._family_counts(item.family)
        if record.state == "completed":
            self.finished_elsewhere += 1
            self._outcome.completed += 1
            counts["completed"] += 1
        else:
            self._outcome.failed.append((item.id, f"{record.reason} (on {record.host})"))
            counts["failed"] += 1

    def _family_counts(self, family: Family) -> Counter[str]:
        counts: Counter[str] = self._outcome.by_family.setdefault(family, Counter())
        return counts


def _ref(item_id: str) -> str:
    from lumasched.scheduler import Scheduler

    return Scheduler.ref(item_id)


async def cluster_view(settings: Settings, batch: str) -> dict[str, Claim]:
    """Every item of manifest ``batch`` (its file name) that Redis has a record of."""
    assert settings.redis_url is not None
    store = ClaimStore(
        settings.redis_url, api_key=settings.api_key, manifest=manifest_id(batch), owner="status"
    )
    async with store:
        return await store.snapshot()
