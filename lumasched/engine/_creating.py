"""Getting each job's generation created, and created once.

One dispatcher per family takes a slot (and a create-rate token) from the
``Limiter``, pops the next queued job and starts its create: the intent goes
to the journal (and to the item claims, across hosts) before the request
leaves. What happens next depends on what the create can have done:

* answered: the generation id is recorded and the job followed;
* surely not sent or refused (429, connect error, 4xx, claim lost): the slot
  is freed and the job queued again or failed;
* the key rejected (401/403), or the API unreachable for longer than allowed
  (``lumasched.engine._reachability``): nothing was created and nothing more can be,
  so creating stops for this session and every job not created is parked
  ``pending`` in the journal; their handles raise that one error;
* outcome unknown (timeout, 5xx, anything unexpected): the generation is
  searched for on the list endpoint (``reconcile``) and adopted if found; the
  create is sent again only once the list has conclusively *not* shown it for
  ``settle`` seconds, and the job fails after ``give_up`` seconds of not knowing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from lumasched.api import CreateRequest, Family, Generation, replace_generation_refs
from lumasched.api._inputs import is_local, media_slots
from lumasched.api._models import REF_PREFIX
from lumasched.engine._context import EngineContext
from lumasched.engine._digest import request_digest
from lumasched.engine._following import Follower
from lumasched.engine._reachability import Reachability
from lumasched.engine._reconcile import find_created, fingerprint, match_body
from lumasched.engine.jobs import Job
from lumasched.engine.jobs import JobState as S
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
    APIUnreachableError,
    AuthenticationError,
    ClaimLost,
    ConnectError,
    InternalServerError,
    LumaError,
    PermissionDeniedError,
    Problem,
    RateLimitError,
    StorageError,
    UploadError,
    ValidationError,
)

if TYPE_CHECKING:
    from lumasched.engine._claims import ItemClaims
    from lumasched.engine._inputs import InputResolver
    from lumasched.store.journal import JournalRecord

__all__ = ["Budget", "Creator", "ReconcileTimes"]

logger = logging.getLogger("lumasched.engine.scheduler")

KEY_REJECTED = "key rejected"
UNREACHABLE = "unreachable"
MISCONFIGURED = "API refused every create"

_ITEM_REFUSALS = frozenset({400, 422})
"""Statuses that refuse the request itself (the server's ``detail`` says why)."""


@attrs.frozen
class ReconcileTimes:
    """How long reconcile waits (see ``Scheduler``'s ``reconcile_*`` arguments)."""

    settle: float
    give_up: float
    interval: float
    skew: float


class Budget:
    """Stops creating once the estimated cost of this session's creates would pass
    ``cents`` (no limit when ``cents`` is None)."""

    def __init__(self, cents: float | None, cost_of: Callable[[CreateRequest], float] | None):
        self.cents = cents
        self.cost_of = cost_of
        self.spent = 0.0

    def allows(self, job: Job) -> bool:
        """May ``job`` be created? Counts its cost if so (a retry was counted already)."""
        if self.cents is None or self.cost_of is None or job.attempts:
            return True
        cost = self.cost_of(job.request)
        if self.spent + cost > self.cents:
            logger.info("budget reached: %.1f of %.1f cents spent", self.spent, self.cents)
            return False
        self.spent += cost
        return True


class Creator:
    """The dispatchers and create tasks of one scheduler (see the module docstring).

    ``counts`` holds the create counters of ``Scheduler.counters()``.
    """

    def __init__(
        self,
        ctx: EngineContext,
        *,
        follower: Follower,
        budget: Budget,
        times: ReconcileTimes,
        owner: str,
        callback_url: str | None,
        claims: ItemClaims | None,
        reachability: Reachability,
        inputs: InputResolver | None = None,
    ) -> None:
        self._inputs = inputs
        self._client = ctx.client
        self.reachability = reachability
        self._table = ctx.table
        self._slots = ctx.slots
        self._writes = ctx.writes
        self._follower = follower
        self.budget = budget
        self._times = times
        self._clock = ctx.clock
        self._owner = owner
        self._callback_url = callback_url
        self._claims = claims
        self._spawn = ctx.spawn
        self._in_flight: dict[str, str] = {}
        """job key -> fingerprint of the body whose create awaits its answer"""
        self._reconcile_lock = anyio.Lock()
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "creates",
                "create_attempts",
                "rate_limited",
                "ambiguous_creates",
                "reconciles",
                "reconciled_found",
            ),
            0,
        )

    # -- granting --------------------------------------------------------------------

    async def dispatch(self, family: Family) -> None:
        """Hand out ``family``'s create permissions, one job at a time (runs until cancelled)."""
        table = self._table
        while True:
            await table.wait_ready(family)
            await self.reachability.wait()
            lease = uuid.uuid4().hex
            await self._slots.limiter.acquire(family, lease)
            job = table.pop(family)
            if job is None or table.stopped_reason is not None:
                await self._slots.release_lease(family, lease)
                if job is not None:
                    table.defer(job, table.stopped_reason or "stopped")
                continue
            if not self.budget.allows(job):
                await self._slots.release_lease(family, lease)
                table.defer(job, "budget")
                table.stop("budget")
                continue
            self._slots.hold(job, lease)
            table.set_state(job, S.CREATING)
            self._spawn(self._create, job, lease)

    def _resolved(self, job: Job) -> CreateRequest:
        """The request to send: references to other jobs replaced by their generation
        ids, and the scheduler's callback URL where the request has none."""
        request = job.request
        if job.depends_on:

            def swap(ref: str) -> str:
                if ref.startswith(REF_PREFIX):
                    generation_id = self._table.generation_of(ref[len(REF_PREFIX) :])
                    assert generation_id is not None
                    return generation_id
                return ref

            request = replace_generation_refs(request, swap)
        if self._callback_url and getattr(request, "callback_url", "") is None:
            request = attrs.evolve(request, callback_url=self._callback_url)
        return request

    # -- one create ------------------------------------------------------------------

    async def _create(self, job: Job, lease: str) -> None:
        request = self._resolved(job)
        if any(is_local(slot.url) for slot in media_slots(request)):
            try:
                request = await self._with_inputs(request)
            except (ValidationError, UploadError) as exc:
                # Before the intent: nothing was or will be sent for this request.
                await self._abandon(job, exc)
                return
        body = match_body(request)
        sent_at = time.time()
        job.attempts += 1
        self.counts["create_attempts"] += 1
        await self._writes.record_intent(
            job.key,
            lease_id=lease,
            body=body,
            sent_at=sent_at,
            owner=self._owner,
            digest=request_digest(job.request),
        )
        if self._claims is not None and not await self._claims.before_create(
            job.key, body=body, sent_at=sent_at, lease_id=lease
        ):
            # Another worker holds the item now (see docs/multihost.md): send nothing.
            await self._abandon(job, ClaimLost(job.key), state="pending", reason="claim lost")
            return
        try:
            generation = await self._send(job, request, body)
        except RateLimitError as exc:
            self.reachability.answered()
            self.counts["rate_limited"] += 1
            logger.info("create of job %s got 429; re-queued", job.key)
            await self._slots.limiter.note_rate_limited(job.family, exc.retry_after)
            await self._give_back(job, reason="rate_limited")
        except (AuthenticationError, PermissionDeniedError) as exc:
            self.reachability.answered()
            await self._park(job, exc, reason=KEY_REJECTED)
        except ConnectError as exc:
            await self._unreachable(job, exc)
        except AmbiguousCreateError as exc:
            self.counts["ambiguous_creates"] += 1
            logger.warning("create of job %s has an unknown outcome: %s", job.key, exc)
            await self.reconcile(job, lease, body, exc.sent_at or sent_at)
        except (ValidationError, APIStatusError) as exc:
            if isinstance(exc, APIStatusError):
                self.reachability.answered()
            if isinstance(exc, InternalServerError):
                self.counts["ambiguous_creates"] += 1
                await self.reconcile(job, lease, body, sent_at)
                return
            if isinstance(exc, APIStatusError) and not _refuses_the_item(exc, job):
                # A 404/405/... to a plain create says the base URL (or the API) is
                # wrong, not the item: every create would get it.
                await self._park(job, exc, reason=MISCONFIGURED)
                return
            await self._abandon(job, exc)
        except Exception as exc:
            # Anything else may have happened after the server accepted the create.
            self.counts["ambiguous_creates"] += 1
            logger.warning("create of job %s ended unexpectedly: %r", job.key, exc)
            await self.reconcile(job, lease, body, sent_at)
        else:
            await self._created(job, lease, generation, reconciled=False)

    async def _with_inputs(self, request: CreateRequest) -> CreateRequest:
        """Local files swapped for their stored URLs (uploaded or re-signed first)."""
        if self._inputs is None:
            field = next(s.field for s in media_slots(request) if is_local(s.url))
            raise ValidationError(
                [Problem(field, "a local file, but the scheduler has no inputs= to upload it")]
            )
        return await self._inputs.resolve(request)

    async def _send(self, job: Job, request: CreateRequest, body: dict[str, Any]) -> Generation:
        self._in_flight[job.key] = fingerprint(body)
        try:
            return await self._client.create(request, retry_rate_limited=False, retry_connect=False)
        finally:
            self._in_flight.pop(job.key, None)

    async def _abandon(
        self, job: Job, error: LumaError, *, state: str = "failed", reason: str | None = None
    ) -> None:
        """The create surely did not happen and will not be tried again here."""
        await self._slots.release(job)
        await self._writes.clear_intent(job.key, state=state, reason=reason or str(error))
        self._table.fail(job, error, journal=False)

    async def _give_back(self, job: Job, *, reason: str) -> None:
        """The create surely did not happen: free the slot and queue the job again."""
        await self._slots.release(job)
        state = "cancelled" if job.cancel_requested else "queued"
        await self._writes.clear_intent(job.key, state=state, reason=reason)
        if job.cancel_requested:
            self._table.cancelled(job)
        else:
            self._table.requeue(job, reason)

    async def _unreachable(self, job: Job, exc: ConnectError) -> None:
        """The server could not be reached (nothing was sent): queued again, and the
        dispatchers wait for the next probe; parked once the outage lasts too long."""
        reachability = self.reachability
        reachability.failed(exc)
        logger.info("create of job %s could not connect (re-queued): %s", job.key, exc)
        if not reachability.expired:
            await self._give_back(job, reason=UNREACHABLE)
            return
        await self._park(job, self.unreachable_error(), reason=UNREACHABLE)

    def unreachable_error(self) -> APIUnreachableError:
        """The error that stops creating once the outage has lasted too long."""
        outage = self.reachability.outage()
        since = outage.since if outage is not None else time.time()
        return APIUnreachableError(
            self.reachability.url,
            since=since,
            waited=self.reachability.down_for(),
            cause=outage.error if outage is not None else "no answer",
        )

    async def _park(self, job: Job, error: LumaError, *, reason: str) -> None:
        """Nothing was created and nothing more can be in this session (the key was
        rejected, the API is gone): stop creating; ``job`` stays pending."""
        await self._slots.release(job)
        await self._writes.clear_intent(job.key, state="pending", reason=reason)
        self.halt(error, reason)
        if job.cancel_requested:
            await self._writes.update(job.key, state="cancelled")
            self._table.cancelled(job)
            return
        self._table.set_state(job, S.PENDING, reason=reason)
        self._table.defer(job, reason, move=False)

    def halt(self, error: LumaError, reason: str) -> None:
        """Create nothing more in this session, because of ``error``."""
        if self._table.halted is None:
            logger.info("creating stopped: %s", error)
        self._table.halt(error, reason)

    def status_checked(self, error: BaseException | None) -> None:
        """What a status request (the poller's) found out about the API."""
        if error is None or isinstance(error, APIStatusError):
            self.reachability.answered()
        if isinstance(error, AuthenticationError | PermissionDeniedError):
            self.halt(error, KEY_REJECTED)
        elif isinstance(error, ConnectError):
            self.reachability.failed(error)
            if self.reachability.expired:
                self.halt(self.unreachable_error(), UNREACHABLE)

    async def _created(
        self, job: Job, lease: str, generation: Generation, *, reconciled: bool
    ) -> None:
        self.reachability.answered()
        job.generation_id = generation.id
        self._table.generation_owners[generation.id] = job.key
        limiter = self._slots.limiter
        # First: the limiter learns the create was answered now, not one journal
        # commit later (an in-process limiter counts its rate token from then).
        await limiter.mark_submitted(job.family, lease, generation.id)
        await self._writes.record_submitted(job.key, generation.id)
        if self._claims is not None:
            await self._claims.created(job.key, generation.id)
        job.timings = attrs.evolve(job.timings, created=time.time())
        self.counts["creates"] += 1
        if not reconciled:
            await limiter.note_success(job.family)
        logger.info(
            "job %s created generation %s%s",
            job.key,
            generation.id,
            " (found by reconcile)" if reconciled else "",
        )
        if job.cancel_requested and not job.done:
            await self._writes.update(job.key, state="cancelled")
            self._table.cancelled(job)
        else:
            self._table.set_state(job, S.SUBMITTED, server_state=str(generation.state))
        self._follower.watch(job, generation, learn=True)

    # -- reconcile ----------------------------------------------------------------------

    async def reconcile_journalled(self, job: Job, record: JournalRecord) -> None:
        """Reconcile a create an earlier run sent without recording its answer."""
        assert record.intent_body is not None and record.intent_at is not None
        lease = record.lease_id or uuid.uuid4().hex
        # Reconcile sends no create (if it finds none, the job queues for a new grant).
        await self._slots.limiter.acquire(job.family, lease, rate=False)
        self._slots.hold(job, lease)
        self.counts["ambiguous_creates"] += 1
        await self.reconcile(job, lease, record.intent_body, record.intent_at)

    async def reconcile(self, job: Job, lease: str, body: dict[str, Any], sent_at: float) -> None:
        """Find the generation an ambiguous create may have started, before any retry."""
        times = self._times
        job.reason = "reconciling"
        self._table.emit(job, job.state, reconciling=True)
        # The deadlines run on the injected clock: wall time says only how old the
        # intent was when this reconcile began (it may come from an earlier run).
        began = self._clock.monotonic()
        age_at_start = max(0.0, time.time() - sent_at)
        while True:
            try:
                async with self._reconcile_lock:
                    self.counts["reconciles"] += 1
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
                        skew=times.skew,
                    )
                    if self._twin_in_flight(job, body):
                        # A job with the same body awaits its create's answer: the
                        # generation listed may be that one's. Ask again later.
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
                        self.counts["reconciled_found"] += 1
                        await self._created(job, lease, found.generation, reconciled=True)
                        return
            except StorageError:
                raise  # the journal cannot be written: the run must stop
            except LumaError as exc:
                logger.warning("reconcile of job %s failed (will retry): %s", job.key, exc)
                found = None
                self.status_checked(exc)
                if self._table.halted is not None:
                    # The intent stays journalled: the next run reconciles it.
                    await self._slots.release(job)
                    self._table.defer(job, self._table.stopped_reason or KEY_REJECTED, move=False)
                    return
            age = age_at_start + self._clock.monotonic() - began
            if found is not None and found.conclusive and age >= times.settle:
                logger.info(
                    "job %s: no generation found %.0fs after its create; creating again",
                    job.key,
                    age,
                )
                await self._give_back(job, reason="reconciled_absent")
                return
            if age >= times.give_up:
                reason = found.reason if found is not None else "list endpoint unavailable"
                error = AmbiguousCreateError(
                    f"could not tell whether the create reached the server ({reason}); "
                    "check the account's generations before running it again",
                    path=job.request.path,
                    body=body,
                    sent_at=sent_at,
                )
                await self._slots.release(job)
                self._table.fail(job, error)
                return
            wait = times.interval
            if found is not None and found.conclusive:
                wait = min(wait, max(0.0, times.settle - age))
            await self._clock.sleep(wait)

    def _twin_in_flight(self, job: Job, body: dict[str, Any]) -> bool:
        mine = fingerprint(body)
        return any(key != job.key and fp == mine for key, fp in self._in_flight.items())

    def _taken_for(self, job: Job) -> Callable[[str], bool]:
        """Generation ids reconcile must not adopt for ``job``: those other jobs own
        (except its own sources, which an upscale may restart under the same id)."""
        mine = {job.key, *job.depends_on}
        owner_of = self._table.owner_of
        writes = self._writes

        def taken(generation_id: str) -> bool:
            owner = owner_of(generation_id)
            if owner is not None and owner not in mine:
                return True
            return any(key not in mine for key in writes.owners_of(generation_id))

        return taken


def _refuses_the_item(error: APIStatusError, job: Job) -> bool:
    """Does ``error`` refuse this job's own request (an item failure), rather than
    every create (a wrong base URL, an API that moved)?"""
    if error.status in _ITEM_REFUSALS:
        return True
    # An upscale or audio names its source in the path: a 404 is about that id.
    return error.status == 404 and job.request.kind in ("upscale", "audio")


def _taken_anywhere(here: Callable[[str], bool], elsewhere: frozenset[str], gid: str) -> bool:
    return gid in elsewhere or here(gid)
