"""Item claims: one manifest worked by many hosts through Redis.

Each manifest item is *claimed* by one worker at a time with a lease that the
worker's heartbeat renews. The claim is the cross-host counterpart of a
journal row and is written in the same order: the claim, then the create
*intent* (body and send time, fenced: only a live claim may send), then the
generation id, then the end (completed with path and sha256, or failed). A
worker that dies stops renewing; once its lease expires any other worker may
claim the item again and continues from what the claim says: it polls a
recorded generation (never creates it again) and reconciles a create whose
outcome is unknown against the list endpoint before anything else.

Keys live under ``NS:{ACCOUNT:m:MANIFEST}:*`` (one Cluster slot; ACCOUNT is a
hash of the API key, never the key):

========  ======  ===============================================================
state     HASH    item -> claimed | creating | submitted | completed | failed
items     HASH    item -> the record as JSON (opaque to the scripts)
owner     HASH    item -> worker that holds (or last held) the claim
leases    ZSET    item -> lease deadline (ms, Redis time)
gens      HASH    generation id -> item (a generation belongs to one item)
inflight  HASH    item -> body fingerprint while its create's answer is awaited
meta      HASH    created_ms: absent means the state is new, or was lost
========  ======  ===============================================================

::

    async with ClaimStore(url, api_key=key, manifest=manifest_id("batch.jsonl")) as claims:
        claim = await claims.claim("item-1")
        if claim.status is ClaimStatus.CLAIMED:
            ...
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import anyio
import attrs
import redis.asyncio as aioredis

from lumasched._claims_scripts import CLAIM, KEY_NAMES, PEEK, RENEW, SNAPSHOT, UPDATE
from lumasched._reconcile import fingerprint
from lumasched._redis_util import REDIS_DOWN, account_id, as_text, connect, pairs, uncancellable
from lumasched.errors import (  # the errors are importable from here too, as they were
    ClaimLost,
    ClaimsLostError,
    ClaimStoreUnavailable,
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
    "claims_prefix",
    "manifest_id",
]

logger = logging.getLogger("lumasched.claims")

T = TypeVar("T")

DEFAULT_CLAIM_TTL = 30.0
FINISHED = ("completed", "failed")


def manifest_id(manifest: str | os.PathLike[str]) -> str:
    """The default identity of a manifest across hosts: a hash of its file *name*.

    The name, not the contents or the full path: hosts may keep the file in
    different directories, and an edited manifest (items added) must keep the
    record of the items already done, or they would be created again.
    """
    name = Path(manifest).name
    return hashlib.sha256(b"lumasched-manifest:" + name.encode()).hexdigest()[:16]


def claims_prefix(namespace: str, account: str, manifest: str) -> str:
    return f"{namespace}:{{{account}:m:{manifest}}}"


class ClaimStatus(enum.StrEnum):
    CLAIMED = "claimed"
    """Ours now; nobody else held it before (or we did)."""
    ADOPTED = "adopted"
    """Ours now; another worker held it and stopped renewing: continue from its record."""
    TAKEN = "taken"
    """Another live worker holds it."""
    DONE = "done"
    """Finished (completed or failed) by some worker."""


@attrs.frozen
class ClaimRecord:
    """What the cluster knows about one item (the cross-host journal row)."""

    item: str
    state: str = "claimed"
    owner: str | None = None
    host: str | None = None
    generation_id: str | None = None
    lease_id: str | None = None
    intent_body: dict[str, Any] | None = None
    intent_at: float | None = None
    path: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    reason: str | None = None
    error_type: str | None = None
    updated_at: float | None = None

    @classmethod
    def from_json(cls, item: str, state: str, text: str) -> ClaimRecord:
        data: dict[str, Any] = json.loads(text) if text else {}
        fields = {f.name for f in attrs.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        data.update(item=item, state=state or data.get("state") or "claimed")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"), sort_keys=True)


@attrs.frozen
class Claim:
    """The answer to ``ClaimStore.claim``."""

    status: ClaimStatus
    record: ClaimRecord
    expires_in: float
    """Seconds left on the lease (ours, or the other holder's when TAKEN)."""


class ItemClaims(Protocol):
    """What the ``Scheduler`` asks of a cross-host claim store (``ClaimStore``)."""

    async def before_create(
        self, key: str, *, body: dict[str, Any], sent_at: float, lease_id: str
    ) -> bool:
        """Record the intent before the POST; False: the item is not ours, send nothing."""
        ...

    async def created(self, key: str, generation_id: str) -> bool:
        """Record the generation id as soon as it is known."""
        ...

    async def found(self, key: str, generation_id: str, body: dict[str, Any]) -> bool:
        """May reconcile adopt this generation for ``key``? (records it if so)"""
        ...

    async def taken_generations(self, key: str) -> frozenset[str]:
        """Generation ids that other items own."""
        ...


class ClaimStore:
    """The Redis record of which worker works which item of one manifest.

    ``url_or_client``: a Redis URL or a ``redis.asyncio.Redis`` you own.
    ``api_key`` only names the account (hashed). ``manifest``: the manifest's
    identity (``manifest_id(path)``). ``ttl``: how long a dead worker's claims
    stay taken; the heartbeat renews held claims every ``ttl / 3``.

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
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.ttl = ttl
        self.host = host or socket.gethostname()
        self.owner = owner or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.manifest = manifest
        self._client, self._own_client = connect(url_or_client)
        prefix = claims_prefix(namespace, account_id(api_key), manifest)
        self._keys = [f"{prefix}:{name}" for name in KEY_NAMES]
        self._scripts = {
            name: self._client.register_script(script)
            for name, script in (("claim", CLAIM), ("update", UPDATE), ("renew", RENEW))
        }
        self._records: dict[str, ClaimRecord] = {}
        """Items this worker holds, with the record as last written."""
        self._seen = False
        self._task: asyncio.Task[None] | None = None
        self.lost = False
        """True once Redis lost the claim state under us (see ``ClaimsLostError``)."""

    def __repr__(self) -> str:
        return f"ClaimStore(manifest={self.manifest!r}, owner={self.owner!r})"

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._heartbeat(), name="lumasched-claims-heartbeat")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
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

    async def claim(self, key: str) -> Claim:
        """Take the item if it is free, ours, or its holder's lease expired."""
        raw = await self._retrying(self._run, "claim", key)
        status, state, text = ClaimStatus(as_text(raw[0])), as_text(raw[1]), as_text(raw[2])
        ms = raw[3]
        record = ClaimRecord.from_json(key, state, text)
        # as its last holder left it: ``owner`` is that holder
        record = attrs.evolve(record, owner=as_text(raw[4]) or record.owner)
        if status in (ClaimStatus.CLAIMED, ClaimStatus.ADOPTED):
            self._records[key] = attrs.evolve(record, owner=self.owner, host=self.host)
        if status is ClaimStatus.ADOPTED:
            logger.info("item %s: adopted from %s (%s)", key, record.owner, state)
        return Claim(status, record, int(ms) / 1000)

    async def peek(self, keys: Iterable[str]) -> dict[str, Claim]:
        """Where each of ``keys`` stands (those with a record), claiming nothing.
        ``CLAIMED``/``ADOPTED`` here mean: free to claim."""
        wanted = list(keys)
        raw = await self._retrying(self._client.eval, PEEK, len(self._keys), *self._keys, *wanted)
        now = int(raw[0])
        if self._seen and not int(raw[1]):
            self._note_lost()
        out: dict[str, Claim] = {}
        for i, key in enumerate(wanted):
            state, text, owner, deadline = (as_text(v) for v in raw[2 + 4 * i : 6 + 4 * i])
            if state:
                out[key] = self._status(key, state, text, owner, float(deadline), now)
        return out

    async def snapshot(self) -> dict[str, Claim]:
        """Every item the cluster has a record of, as seen now (``lumasched status``)."""
        raw = await self._client.eval(SNAPSHOT, len(self._keys), *self._keys)
        now = int(raw[0])
        states, texts, owners = pairs(raw[1]), pairs(raw[2]), pairs(raw[3])
        leases = {k: float(v) for k, v in pairs(raw[4]).items()}
        return {
            key: self._status(
                key, state, texts.get(key, ""), owners.get(key, ""), leases.get(key, 0), now
            )
            for key, state in states.items()
        }

    def _status(
        self, key: str, state: str, text: str, owner: str, deadline: float, now: int
    ) -> Claim:
        record = ClaimRecord.from_json(key, state, text)
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
        try:
            # No intent on record, no create: while Redis is down, creates pause.
            answer = await self._retrying(self._update, key, "intent", record, fp=fingerprint(body))
        except ClaimsLostError:
            return False
        if answer != "ok":
            self._records.pop(key, None)
            logger.warning("item %s: claim lost before its create; not sending it", key)
            return False
        return True

    async def created(self, key: str, generation_id: str) -> bool:
        """Record the generation id the server returned (or reconcile found)."""
        record = self._records.get(key) or ClaimRecord(key, owner=self.owner, host=self.host)
        record = attrs.evolve(
            record, state="submitted", generation_id=generation_id, updated_at=time.time()
        )
        try:
            with anyio.fail_after(self.ttl):
                answer = await self._retrying(
                    self._update, key, "generation", record, generation_id=generation_id
                )
        except (TimeoutError, ClaimsLostError) as exc:
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
        record = self._records.get(key) or ClaimRecord(key, owner=self.owner, host=self.host)
        record = attrs.evolve(
            record, state="submitted", generation_id=generation_id, updated_at=time.time()
        )
        answer = await self._guarded(
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
        flat = await self._guarded(self._client.hgetall(self._keys[4]))
        return frozenset(as_text(g) for g, item in flat.items() if as_text(item) != key)

    async def complete(
        self,
        key: str,
        *,
        generation_id: str | None,
        path: str | None,
        sha256: str | None,
        bytes: int | None,
    ) -> None:
        record = self._records.pop(key, None) or ClaimRecord(key, owner=self.owner)
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
        await self._retrying(self._update, key, "finish", record)

    async def fail(self, key: str, *, reason: str, error_type: str | None = None) -> None:
        record = self._records.pop(key, None) or ClaimRecord(key, owner=self.owner)
        record = attrs.evolve(
            record,
            state="failed",
            host=self.host,
            reason=reason,
            error_type=error_type,
            updated_at=time.time(),
        )
        await self._retrying(self._update, key, "finish", record)

    async def release(self, key: str) -> None:
        """Give the item back unfinished: another worker may take it at once and
        continues from its record (polls its generation, reconciles its intent)."""
        record = self._records.pop(key, None)
        if record is not None:
            await self._retrying(self._update, key, "release", record)

    # -- internals -------------------------------------------------------------------

    async def _guarded(self, call: Awaitable[T]) -> T:
        """``call``, with Redis outages as a ``LumaError`` (reconcile retries those)."""
        try:
            return await call
        except REDIS_DOWN as exc:
            raise ClaimStoreUnavailable(f"Redis unreachable: {exc}") from exc

    async def _retrying(self, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        """``fn(...)``, called again while Redis is unreachable (claiming and
        recording pause; nothing is lost)."""
        delay = 0.05
        while True:
            try:
                return await fn(*args, **kw)
            except REDIS_DOWN as exc:
                if delay == 0.05:
                    logger.warning("Redis unreachable (%s): item claims wait", type(exc).__name__)
                await anyio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _run(self, name: str, key: str, *args: Any) -> Any:
        seen = "1" if self._seen else "0"
        argv = [seen, self.owner, round(self.ttl * 1000), key, *args]
        result = await uncancellable(self._scripts[name](keys=self._keys, args=argv))
        if isinstance(result, list) and result and as_text(result[0]) == "state_lost":
            self._note_lost()
        self._seen = True
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
            "update", key, mode, record.state, record.to_json(), generation_id or "", fp
        )
        answer = as_text(raw[0])
        if answer == "ok" and key in self._records:
            self._records[key] = record
        return answer

    def _note_lost(self) -> None:
        if not self.lost:
            self.lost = True
            self._records.clear()
            logger.error(
                "Redis lost the claim state of this manifest (restart without "
                "persistence, FLUSH or eviction): creating nothing more"
            )
        raise ClaimsLostError(
            "the claim state in Redis was lost; items other hosts finished would look new. "
            "Check each host's journal and results before running again"
        )

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.ttl / 3 * random.uniform(0.9, 1.0))
            keys = list(self._records)
            if not keys:
                continue
            try:
                lost = await self._run("renew", "", *keys)
            except REDIS_DOWN as exc:
                logger.warning("could not renew item claims: %s", exc)
                continue
            except ClaimsLostError:
                return
            for key in map(as_text, lost):
                if self._records.pop(key, None) is not None:
                    logger.warning("item %s: claim lost (another worker took it over)", key)
