"""Item claims: one batch worked by many hosts through Redis.

Each manifest item is *claimed* by one worker at a time with a lease that the
worker's heartbeat renews. The claim is the cross-host counterpart of a
journal row and is written in the same order: the claim, then the create
*intent* (body and send time, fenced: only a live claim may send), then the
generation id, then the end (completed with path and sha256, or failed). A
worker that dies stops renewing; once its lease expires any other worker may
claim the item again and continues from what the claim says: it polls a
recorded generation (never creates it again) and reconciles a create whose
outcome is unknown against the list endpoint before anything else.

Keys live under ``NS:{ACCOUNT:m:BATCH}:*`` (one Cluster slot; ACCOUNT is a
hash of the API key, never the key; BATCH is the batch's identity, by default a
digest of its content: ``batch_id``). An item's field is its key, plus
``@DIGEST`` of its request when one is given, so an item is only ever "done"
for the request that was made:

========  ======  ===============================================================
state     HASH    item -> claimed | creating | submitted | completed | failed
items     HASH    item -> the record as JSON (opaque to the scripts)
owner     HASH    item -> worker that holds (or last held) the claim
leases    ZSET    item -> lease deadline (ms, Redis time)
gens      HASH    generation id -> item (a generation belongs to one item)
inflight  HASH    item -> body fingerprint while its create's answer is awaited
meta      HASH    created_ms, epoch (absent or changed: the state was lost), lost,
                  recover_until, settled
sites     HASH    site -> label (host:out dir) of every site that worked the batch
recovery  HASH    site -> reseeding:DEADLINE | done, after a loss
========  ======  ===============================================================

When Redis loses the state (a restart without persistence, a failover to a
replica that missed writes, FLUSH, eviction) every live worker notices within a
heartbeat (the epoch it knows is gone) and *re-seeds* what it knows: the claims
it holds, and what its ``reseed`` source (the runner's journal) says it finished
or sent. Items nobody re-seeds are not claimable until every site that worked
the batch has re-seeded; a site that does not (it is gone) leaves them waiting
(``ClaimStatus.UNKNOWN``) until its journal is imported or it runs again.

::

    async with ClaimStore(url, api_key=key, manifest=batch_id(manifest)) as claims:
        claim = await claims.claim("item-1", digest=request_digest(request))
        if claim.status is ClaimStatus.CLAIMED:
            ...
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self

import anyio
import attrs
import redis.asyncio as aioredis

from lumasched._background import Supervisor, Tolerance
from lumasched._clock import SYSTEM_CLOCK, Clock
from lumasched.claims import _scripts as lua
from lumasched.claims._identity import (
    batch_id,
    claim_field,
    claims_prefix,
    item_digest,
    manifest_id,
    request_digest,
    split_field,
)
from lumasched.claims._membership import Membership, Relost
from lumasched.claims._outage import Outage
from lumasched.claims._records import (
    FINISHED,
    Claim,
    ClaimRecord,
    ClaimStatus,
    ItemClaims,
    Reseed,
)
from lumasched.engine._reconcile import fingerprint
from lumasched.errors import (  # the errors are importable from here too, as they were
    ClaimLost,
    ClaimsLostError,
    ClaimStoreUnavailable,
)
from lumasched.limits._redis_util import (
    REDIS_DOWN,
    account_id,
    as_text,
    connect,
    pairs,
    uncancellable,
)

__all__ = [
    "DEFAULT_CLAIM_TTL",
    "Claim",
    "ClaimLost",
    "ClaimRecord",
    "ClaimStatus",
    "ClaimStore",
    "ClaimStoreUnavailable",
    "ClaimsLostError",
    "ItemClaims",
    "Reseed",
    "batch_id",
    "claim_field",
    "claims_prefix",
    "item_digest",
    "manifest_id",
    "request_digest",
    "split_field",
]

logger = logging.getLogger("lumasched.claims")

DEFAULT_CLAIM_TTL = 30.0


class ClaimStore:
    """The Redis record of which worker works which item of one batch.

    ``url_or_client``: a Redis URL or a ``redis.asyncio.Redis`` you own.
    ``api_key`` only names the account (hashed). ``manifest``: the batch's
    identity (``batch_id(...)``). ``ttl``: how long a dead worker's claims
    stay taken; the heartbeat renews held claims every ``ttl / 3``.
    ``site``/``site_label``: what survives this process (the runner uses the
    host and ``--out`` directory): after a loss of the Redis state, a site that
    worked the batch and does not re-seed it holds back the items nobody
    accounts for. ``reseed``: what else to put back after a loss (the runner's
    journal: items finished, generations created, intents sent). ``on_event``:
    one-line messages for the user (Redis down and back, state lost and
    re-seeded). ``remembered``: the epoch and sites an earlier process of this
    site knew (what ``on_join(epoch, sites)`` was last given): a state lost
    while no process of the site ran is then noticed too, and re-seeded.
    ``on_join`` runs in a worker thread (it may write a journal: never SQLite on
    the event loop), one call at a time, in order.
    ``clock``: what the heartbeat and the waits run on (a fake one in tests).

    Also the scheduler's claim hooks (``before_create``, ``created``,
    ``found``, ``taken_generations``): see ``Scheduler(claims=...)``.
    Must be used as an async context manager (it runs the heartbeat).
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        api_key: str | None,
        manifest: str,
        namespace: str = "lumasched",
        ttl: float = DEFAULT_CLAIM_TTL,
        owner: str | None = None,
        host: str | None = None,
        site: str | None = None,
        site_label: str | None = None,
        reseed: Callable[[], Awaitable[list[Reseed]]] | None = None,
        on_event: Callable[[str], None] | None = None,
        remembered: tuple[str | None, Mapping[str, str]] = (None, {}),
        on_join: Callable[[str, dict[str, str]], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.ttl = ttl
        self._clock = clock
        self.host = host or socket.gethostname()
        self.owner = owner or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.site = site or self.owner
        self.site_label = site_label or self.owner
        self.manifest = manifest
        self._outage = Outage(clock, on_event)
        self._client, self._own_client = connect(url_or_client)
        prefix = claims_prefix(namespace, account_id(api_key), manifest)
        self._keys = [f"{prefix}:{name}" for name in lua.KEY_NAMES]
        self._scripts = {
            name: self._client.register_script(getattr(lua, name))
            for name in ("HELLO", "RESEED", "CLAIM", "UPDATE", "RENEW")
        }
        self._records: dict[str, ClaimRecord] = {}
        """Items this worker holds, with the record as last written."""
        self._digests: dict[str, str] = {}
        """Item key -> the digest of its request, as given to ``claim``."""
        self._membership = Membership(
            scripts=self._scripts,
            keys=self._keys,
            owner=self.owner,
            site=self.site,
            site_label=self.site_label,
            ttl=ttl,
            held=self._records,
            digests=self._digests,
            reseed=reseed,
            remembered=remembered,
            on_join=on_join,
            event=self._outage.event,
        )
        self._background = Supervisor("lumasched-claims-heartbeat", logger)
        self._heartbeat_trouble = Tolerance("claims heartbeat", ttl, clock, logger)
        """Failing past the TTL, the heartbeat has lost every claim: it stops, loudly."""

    @property
    def reseed(self) -> Callable[[], Awaitable[list[Reseed]]] | None:
        """What else to put back after a loss of the state (settable)."""
        return self._membership.reseed

    @reseed.setter
    def reseed(self, source: Callable[[], Awaitable[list[Reseed]]] | None) -> None:
        self._membership.reseed = source

    @property
    def losses(self) -> int:
        """How many times Redis lost the claim state under this worker (each re-seeded)."""
        return self._membership.losses

    @property
    def lost(self) -> bool:
        """Kept for compatibility: a lost state is now re-seeded, never final."""
        return False

    @property
    def redis_down_for(self) -> float | None:
        """Seconds Redis has been unreachable for (None: it is reachable)."""
        return self._outage.down_for

    def __repr__(self) -> str:
        return f"ClaimStore(manifest={self.manifest!r}, owner={self.owner!r})"

    async def __aenter__(self) -> Self:
        # Supervised (lumasched._background): if the heartbeat stops, its error is
        # raised by the next claim or create and by __aexit__, never lost.
        self._background.start(self._heartbeat)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._background.aclose()
            finally:
                # Hand unfinished items over at once instead of after the TTL.
                with anyio.move_on_after(5.0):
                    for key in list(self._records):
                        try:
                            await self.release(key)
                        except Exception as exc:  # Redis gone: the leases expire instead
                            logger.warning("could not hand over claim %s: %s", key, exc)
                            break
                if self._own_client:
                    await self._client.aclose()

    # -- claiming ----------------------------------------------------------------

    async def claim(self, key: str, *, digest: str | None = None) -> Claim:
        """Take the item if it is free, ours, or its holder's lease expired.

        ``digest`` (``request_digest``) ties the claim to one request: the same
        key with another request is another item. While other sites re-seed
        after a loss of the Redis state, this waits."""
        self._background.check()
        if digest:
            self._digests[key] = digest
        waited = False
        # Not a retry loop: waiting for other sites to re-seed (outages: Outage.retrying).
        while True:
            raw = await self._outage.retrying(self._run, "CLAIM", key)
            status = as_text(raw[0])
            if status != "recovering":
                break
            if not waited:
                waited = True
                logger.info("item %s: waiting for other hosts to re-seed the claims", key)
            await self._clock.sleep(min(1.0, max(0.02, int(raw[3]) / 1000)))
        state, text, ms = as_text(raw[1]), as_text(raw[2]), raw[3]
        record = ClaimRecord.from_json(self._field(key), state, text)
        # as its last holder left it: ``owner`` is that holder
        record = attrs.evolve(record, owner=as_text(raw[4]) or record.owner)
        claim_status = ClaimStatus(status)
        if claim_status in (ClaimStatus.CLAIMED, ClaimStatus.ADOPTED):
            self._records[key] = attrs.evolve(
                record, owner=self.owner, host=self.host, digest=digest or record.digest
            )
        if claim_status is ClaimStatus.ADOPTED:
            logger.info("item %s: adopted from %s (%s)", key, record.owner, state)
        return Claim(claim_status, record, int(ms) / 1000)

    async def peek(self, keys: Iterable[str]) -> dict[str, Claim]:
        """Where each of ``keys`` stands (those with a record), claiming nothing.
        ``CLAIMED``/``ADOPTED`` here mean: free to claim."""
        wanted = list(keys)
        fields = [self._field(key) for key in wanted]
        # Not a retry loop: read again once re-joined under the new epoch.
        while True:
            raw = await self._outage.retrying(
                self._client.eval, lua.PEEK, len(self._keys), *self._keys, *fields
            )
            if self._membership.epoch is None or as_text(raw[1]) == self._membership.epoch:
                break
            await self._outage.retrying(self._membership.recover, self._membership.epoch)
        now = int(raw[0])
        out: dict[str, Claim] = {}
        for i, key in enumerate(wanted):
            state, text, owner, deadline = (as_text(v) for v in raw[2 + 4 * i : 6 + 4 * i])
            if state:
                out[key] = self._status(fields[i], state, text, owner, float(deadline), now)
        return out

    async def snapshot(self) -> dict[str, Claim]:
        """Every item the cluster has a record of, as seen now (``lumasched status``),
        keyed by field (``claim_field``; ``record.item`` is the item's key)."""
        raw = await self._client.eval(lua.SNAPSHOT, len(self._keys), *self._keys)
        now = int(raw[0])
        states, texts, owners = pairs(raw[1]), pairs(raw[2]), pairs(raw[3])
        leases = {k: float(v) for k, v in pairs(raw[4]).items()}
        return {
            field: self._status(
                field, state, texts.get(field, ""), owners.get(field, ""), leases.get(field, 0), now
            )
            for field, state in states.items()
        }

    async def recovery(self) -> dict[str, Any]:
        """The batch's recovery state (``lumasched status``): whether the state was
        lost and not settled yet, and which sites re-seeded (site label -> status)."""
        raw = await self._client.eval(lua.SNAPSHOT, len(self._keys), *self._keys)
        meta, sites, recovery = pairs(raw[5]), pairs(raw[6]), pairs(raw[7])
        return {
            "lost": meta.get("lost") == "1" and meta.get("settled") != "1",
            "sites": {label: recovery.get(site, "") for site, label in sites.items()},
        }

    def _status(
        self, field: str, state: str, text: str, owner: str, deadline: float, now: int
    ) -> Claim:
        record = ClaimRecord.from_json(field, state, text)
        record = attrs.evolve(record, owner=owner or record.owner)
        left = (deadline - now) / 1000
        if record.state in FINISHED:
            status = ClaimStatus.DONE
        elif left > 0 and record.owner != self.owner:
            status = ClaimStatus.TAKEN
        else:
            status = ClaimStatus.CLAIMED if record.owner == self.owner else ClaimStatus.ADOPTED
        return Claim(status, record, max(0.0, left))

    def held(self) -> list[str]:
        return list(self._records)

    # -- the record, in journal order --------------------------------------------

    async def before_create(
        self, key: str, *, body: dict[str, Any], sent_at: float, lease_id: str
    ) -> bool:
        """Record the create intent; False (send nothing) if the claim is no longer ours."""
        self._background.check()
        if key not in self._records:
            return False
        record = attrs.evolve(
            self._records[key],
            state="creating",
            intent_body=body,
            intent_at=sent_at,
            lease_id=lease_id,
            generation_id=None,
            updated_at=time.time(),
        )
        # No intent on record, no create: while Redis is down, creates pause.
        answer = await self._outage.retrying(
            self._update, key, "intent", record, fp=fingerprint(body)
        )
        if answer != "ok":
            self._records.pop(key, None)
            logger.warning("item %s: claim lost before its create; not sending it", key)
            return False
        return True

    async def created(self, key: str, generation_id: str) -> bool:
        """Record the generation id the server returned (or reconcile found)."""
        record = self._records.get(key) or self._new_record(key)
        record = attrs.evolve(
            record, state="submitted", generation_id=generation_id, updated_at=time.time()
        )
        try:
            with anyio.fail_after(self.ttl):
                answer = await self._outage.retrying(
                    self._update, key, "generation", record, generation_id=generation_id
                )
        except TimeoutError as exc:
            # The intent is on record: a worker that takes the item over finds the
            # generation by reconciling.
            logger.warning("item %s: generation id not recorded in Redis: %s", key, exc)
            return False
        if answer != "ok":
            self._records.pop(key, None)
            return False
        return True

    async def found(self, key: str, generation_id: str, body: dict[str, Any]) -> bool:
        """May reconcile adopt ``generation_id`` for ``key``? No when another item
        owns it, or another worker's create of an identical body is in flight
        (the generation may be that one's). Records it when yes."""
        record = self._records.get(key) or self._new_record(key)
        record = attrs.evolve(
            record, state="submitted", generation_id=generation_id, updated_at=time.time()
        )
        answer = await self._outage.guarded(
            self._update(key, "found", record, generation_id=generation_id, fp=fingerprint(body))
        )
        if answer == "ok":
            return True
        if answer == "lost":
            self._records.pop(key, None)
            return True  # ours is the id now, whoever holds the claim
        return False

    async def taken_generations(self, key: str) -> frozenset[str]:
        """Generation ids other items own (reconcile must not adopt them)."""
        flat = await self._outage.guarded(self._client.hgetall(self._keys[4]))
        field = self._field(key)
        return frozenset(as_text(g) for g, item in flat.items() if as_text(item) != field)

    async def complete(
        self,
        key: str,
        *,
        generation_id: str | None,
        path: str | None,
        sha256: str | None,
        bytes: int | None,
    ) -> None:
        record = self._records.pop(key, None) or self._new_record(key)
        record = attrs.evolve(
            record,
            state="completed",
            host=self.host,
            generation_id=generation_id or record.generation_id,
            path=path,
            sha256=sha256,
            bytes=bytes,
            updated_at=time.time(),
        )
        await self._outage.retrying(self._update, key, "finish", record)
        self._digests.pop(key, None)  # finished: memory stays flat over a long batch

    async def fail(self, key: str, *, reason: str, error_type: str | None = None) -> None:
        record = self._records.pop(key, None) or self._new_record(key)
        record = attrs.evolve(
            record,
            state="failed",
            host=self.host,
            reason=reason,
            error_type=error_type,
            updated_at=time.time(),
        )
        await self._outage.retrying(self._update, key, "finish", record)
        self._digests.pop(key, None)

    async def release(self, key: str, *, unsent: bool = False) -> None:
        """Give the item back unfinished: another worker may take it at once and
        continues from its record (polls its generation, reconciles its intent).
        ``unsent``: no create of it can be in flight (each one surely did not
        happen), so a create intent on record is cleared first: the next holder
        creates it without reconciling for nothing."""
        record = self._records.pop(key, None)
        if record is None:
            return
        if unsent and record.generation_id is None and record.intent_body is not None:
            record = attrs.evolve(
                record,
                state="claimed",
                intent_body=None,
                intent_at=None,
                lease_id=None,
                updated_at=time.time(),
            )
            await self._outage.retrying(self._update, key, "unsent", record)
        await self._outage.retrying(self._update, key, "release", record)

    async def put_back(self, facts: Iterable[Reseed], *, settle: bool = False) -> int:
        """Write ``facts`` that Redis does not hold (first writer wins; a finished
        record replaces an unfinished one). ``settle``: the items that waited for a
        gone site become claimable (``lumasched claims import`` after importing
        that site's journal). Returns how many records were written. For a store
        that works no items (an importer): it does not join the batch as a site."""
        facts = list(facts)
        # Not a retry loop: written again under the epoch that replaced a lost one.
        while True:
            if self._membership.epoch is None:
                # Under the current epoch (created if the state is new), as no site:
                # an importer must not be waited for after a later loss.
                raw = await self._outage.retrying(
                    self._scripts["HELLO"], keys=self._keys, args=["", "", "", 0, 0]
                )
                self._membership.epoch = as_text(raw[0])
            try:
                written = await self._outage.retrying(self._membership.put, facts, done=False)
            except Relost:
                self._membership.epoch = None  # lost meanwhile: again, under the new epoch
                continue
            break
        if settle:
            await self._outage.retrying(self._client.eval, lua.SETTLE, len(self._keys), *self._keys)
        return written

    # -- internals -------------------------------------------------------------------

    def _field(self, key: str) -> str:
        return claim_field(key, self._digests.get(key))

    def _new_record(self, key: str) -> ClaimRecord:
        return ClaimRecord(key, owner=self.owner, host=self.host, digest=self._digests.get(key))

    async def _run(self, name: str, key: str, *args: Any) -> Any:
        """Run a script of ours; after a loss of the state, re-seed and run it again."""
        # Not a retry loop: once per loss of the state (no wait: the re-seed is the work).
        while True:
            if self._membership.epoch is None:
                await self._membership.recover(None)
            epoch = self._membership.epoch or ""
            argv: list[Any] = [epoch, self.owner, round(self.ttl * 1000)]
            argv.append(self._field(key) if key else "")
            result = await uncancellable(self._scripts[name](keys=self._keys, args=[*argv, *args]))
            if isinstance(result, list) and result and as_text(result[0]) == "state_lost":
                await self._membership.recover(epoch)
                continue
            return result

    async def _update(
        self,
        key: str,
        mode: str,
        record: ClaimRecord,
        *,
        generation_id: str | None = None,
        fp: str = "",
    ) -> str:
        raw = await self._run(
            "UPDATE", key, mode, record.state, record.to_json(), generation_id or "", fp
        )
        answer = as_text(raw[0])
        if answer == "ok" and key in self._records:
            self._records[key] = record
        return answer

    async def _heartbeat(self) -> None:
        # Not a retry loop: a renewal every ttl/3 for the store's life.
        while True:
            await self._clock.sleep(self.ttl / 3 * random.uniform(0.9, 1.0))
            if self._membership.epoch is None:
                continue  # never used the batch (``lumasched status``): not a site of it
            try:
                await self._beat()
            except REDIS_DOWN as exc:
                self._outage.down(exc)
            except Exception as exc:  # e.g. Redis out of memory, a hook that failed
                self._heartbeat_trouble.failed(exc)
            else:
                self._heartbeat_trouble.ok()

    async def _beat(self) -> None:
        keys = list(self._records)
        # Also when holding nothing: every live worker notices a lost state
        # within a heartbeat and re-seeds it.
        raw = await self._run("RENEW", "", *(self._field(key) for key in keys))
        self._outage.up()
        await self._membership.learn(pairs(raw[1]))
        fields = {self._field(key): key for key in keys}
        for field in map(as_text, raw[0]):
            key = fields.get(field, field)
            if self._records.pop(key, None) is not None:
                logger.warning("item %s: claim lost (another worker took it over)", key)
