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
reference. When Redis loses the claim state, the journal is what this host
re-seeds it from (``reseed``).

Claims are keyed by the batch's identity (``batch_id``: its content, or
``--batch NAME``) and each item's request digest, so an item is only "done
elsewhere" when another host finished that very request.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from lumasched.api import Family, request_to_dict
from lumasched.claims import (
    Claim,
    ClaimRecord,
    ClaimStatus,
    ClaimStore,
    Reseed,
    item_digest,
    request_digest,
)
from lumasched.cli._outcomes import failure_reason
from lumasched.engine.jobs import Job, JobDeferred, JobState
from lumasched.errors import ClaimLost
from lumasched.manifest import Manifest, ManifestItem
from lumasched.store.journal import Journal, JournalRecord, NewJob

if TYPE_CHECKING:
    from lumasched._config import Settings
    from lumasched.api import CreateRequest
__all__ = ["GONE_REASON", "ClaimedRun", "cluster_view", "journal_fact", "site_of"]

logger = logging.getLogger("lumasched.claims")

PEEK_CHUNK = 1000
GONE_REASON = "may have been made by a host that is gone"
"""``not_run`` reason of items that wait for a person (``EXIT_CLAIMS_WAIT``)."""
LISTED = 5
"""Item ids named in the one-line message about waiting items."""


def site_of(host: str, out_dir: Path) -> tuple[str, str]:
    """The site id and label of a host's ``--out`` directory: what outlives a
    process (a rerun there re-seeds what its predecessor did)."""
    where = os.path.realpath(out_dir)
    site = hashlib.sha256(f"lumasched-site:{host}\0{where}".encode()).hexdigest()[:16]
    return site, f"{host}:{where}"


def journal_fact(row: JournalRecord, host: str | None) -> ClaimRecord | None:
    """What a journal row tells the other hosts (None: nothing was sent for it).
    ``host``: the host whose journal it is (None: not known)."""
    common: dict[str, Any] = {"item": row.key, "digest": request_digest(row.request)}
    if row.state == "completed":
        return ClaimRecord(
            state="completed",
            host=host if row.path else None,
            generation_id=row.generation_id,
            path=row.path,
            sha256=row.sha256,
            bytes=row.bytes,
            **common,
        )
    if row.state == "failed":
        return ClaimRecord(
            state="failed", host=host, reason=row.reason, error_type=row.error_type, **common
        )
    if row.generation_id:
        return ClaimRecord(
            state="submitted",
            host=host,
            generation_id=row.generation_id,
            lease_id=row.lease_id,
            **common,
        )
    if row.intent_body is not None and row.intent_at is not None:
        return ClaimRecord(
            state="creating",
            host=host,
            intent_body=row.intent_body,
            intent_at=row.intent_at,
            lease_id=row.lease_id,
            **common,
        )
    return None


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
        self._unknown: dict[str, ManifestItem] = {}
        """Items that wait for a person: Redis lost its state, and a host that is gone
        may have made them (``ClaimStatus.UNKNOWN``)."""
        self._gone: set[str] = set()
        self.finished_elsewhere = 0
        self._poll = min(1.0, max(0.05, claims.ttl / 4))
        claims.reseed = self.reseed

    @property
    def waiting_for_a_person(self) -> list[str]:
        """Ids of the items left waiting because a gone host may have made them."""
        return list(self._unknown)

    def wait_message(self, command: str) -> str:
        """One line: which items wait, why, and how to resolve it (``command``: the
        start of the import command for this batch; the gone hosts' directories and
        ``--redis URL`` follow)."""
        ids = list(self._unknown)
        more = f" and {len(ids) - LISTED} more" if len(ids) > LISTED else ""
        shown = ", ".join(ids[:LISTED]) + more
        gone = sorted(self._gone)
        dirs = " ".join(label.partition(":")[2] or label for label in gone) or "DIR"
        return (
            f"{len(ids)} item(s) wait ({shown}): Redis lost its state and "
            f"{', '.join(gone) or 'a host'} worked this batch but has not re-seeded it, so "
            f"it may have made them; run the same command there again, or copy its --out "
            f"here and import it ({command} {dirs} --redis URL), then rerun"
        )

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
        # Once more: the gone host may have come back, or its journal imported.
        for item in list(self._unknown.values()):
            if self._stopped():
                break
            del self._unknown[item.id]
            again = await self._gate(item)
            if again is not None:
                yield again
        for item in self._waiting.values():
            self._outcome.not_run["held by another host"] += 1
            self._family_counts(item.family)["not run"] += 1
        for item in self._unknown.values():
            self._outcome.not_run[GONE_REASON] += 1
            self._family_counts(item.family)["not run"] += 1
        if self.finished_elsewhere:
            self._note(f"{self.finished_elsewhere} item(s) were finished by other hosts")

    def _stopped(self) -> bool:
        return self._stopping.is_set()

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
            if dep in self._unknown:
                self._unknown[item.id] = item  # builds on an item that waits for a person
                return None
            if dep in self._waiting:
                self._waiting[item.id] = item  # builds on an item still running elsewhere
                return None
        claim = await self._claims.claim(item.id, digest=self._digest(item))
        if claim.status is ClaimStatus.TAKEN:
            self._waiting[item.id] = item
            return None
        if claim.status is ClaimStatus.UNKNOWN:
            self._unknown[item.id] = item
            self._gone.update(filter(None, (claim.record.owner or "").splitlines()))
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

    def _digest(self, item: ManifestItem) -> str:
        return item_digest(item)  # not kept: memory stays flat over a long manifest

    # -- after Redis lost the claim state ------------------------------------------------

    async def reseed(self) -> list[Reseed]:
        """What this host knows for the claims (``ClaimStore.reseed``): every item its
        journal shows finished, created or sent, and what other hosts finished."""
        return await anyio.to_thread.run_sync(self._reseed_facts)

    def _reseed_facts(self) -> list[Reseed]:
        facts = [
            Reseed(key, self._digest(item), record)
            for key, (item, record) in self._elsewhere.items()
        ]
        for row in self._journal.records():
            if row.key in self._elsewhere:
                continue
            record = journal_fact(row, self._claims.host)
            if record is not None:
                facts.append(Reseed(row.key, record.digest, record))
        return facts

    # -- the local journal, seeded from the claims -------------------------------------

    def _add_row(self, key: str, request: CreateRequest, deps: tuple[str, ...]) -> None:
        from lumasched.api import family_of

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
            # Parked before its create was sent (or after one that surely did not
            # happen): the intent an earlier attempt recorded is stale.
            unsent = job.state is JobState.PENDING and job.generation_id is None
            await self._claims.release(job.key, unsent=unsent)
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
    from lumasched.engine.scheduler import Scheduler

    return Scheduler.ref(item_id)


async def cluster_view(settings: Settings, batch: str) -> tuple[dict[str, Claim], dict[str, Any]]:
    """Every item of batch ``batch`` (``batch_id``) that Redis has a record of, and
    the batch's recovery state (``ClaimStore.recovery``)."""
    assert settings.redis_url is not None
    store = ClaimStore(settings.redis_url, api_key=settings.api_key, manifest=batch, owner="status")
    async with store:
        return await store.snapshot(), await store.recovery()
