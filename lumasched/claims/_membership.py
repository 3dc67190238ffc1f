"""A worker's membership of a batch in Redis: the epoch of the state it joined,
the sites that work the batch, and the re-seeding after Redis lost the state
(a restart without persistence, a failover, a flush): see ``lumasched.claims``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs

from lumasched.claims._identity import claim_field
from lumasched.claims._records import ClaimRecord, Reseed
from lumasched.engine._reconcile import fingerprint
from lumasched.limits._redis_util import as_text, pairs, uncancellable

__all__ = ["RESEED_CHUNK", "Membership", "Relost"]

RESEED_CHUNK = 200


class Relost(Exception):
    """The state was lost again while we re-seeded it."""


class Membership:
    """What this worker knows of the batch's state in Redis, and its joining.

    ``held`` and ``digests`` are the store's own maps (the claims it holds, the
    request digest of each item), read when re-seeding. ``remembered``,
    ``reseed`` and ``on_join``: as ``ClaimStore`` takes them. ``event`` tells the
    user (a loss, what was put back)."""

    def __init__(
        self,
        *,
        scripts: Mapping[str, Any],
        keys: list[str],
        owner: str,
        site: str,
        site_label: str,
        ttl: float,
        held: dict[str, ClaimRecord],
        digests: dict[str, str],
        reseed: Callable[[], Awaitable[list[Reseed]]] | None,
        remembered: tuple[str | None, Mapping[str, str]],
        on_join: Callable[[str, dict[str, str]], None] | None,
        event: Callable[[str], None],
    ) -> None:
        self._scripts = scripts
        self._keys = keys
        self._owner = owner
        self._site = site
        self._site_label = site_label
        self._ttl = ttl
        self._held = held
        self._digests = digests
        self.reseed = reseed
        """What else to put back after a loss (the runner's journal)."""
        self._on_join = on_join
        self._event = event
        self.epoch: str | None = None
        """The epoch joined (None: not yet, or the state was lost meanwhile)."""
        self._remembered_epoch, sites = remembered
        self._sites: dict[str, str] = dict(sites)
        """Every site seen working the batch (site -> label): survives a loss here."""
        self._joins_told = anyio.Lock()
        self._joined = asyncio.Lock()
        self._lost_noted: str | None = None
        self.losses = 0
        """How many times Redis lost the claim state under this worker (each re-seeded)."""

    async def recover(self, lost_epoch: str | None) -> None:
        """Join the batch (``lost_epoch`` None), or re-join it after Redis lost the
        state (the epoch we knew is gone): register this site, and re-seed what we
        hold and what ``reseed`` knows if the epoch began with a loss."""
        async with self._joined:
            if self.epoch != lost_epoch:
                return  # another task of ours did it meanwhile
            if lost_epoch is not None and self._lost_noted != lost_epoch:
                self._lost_noted = lost_epoch  # once, even if Redis drops while we re-seed
                self.losses += 1
                self._event(
                    "Redis lost the claim state (a restart without persistence, a failover "
                    "or a flush): re-seeding what this host knows; creates pause meanwhile"
                )
            before = self._remembered_epoch
            # Not a retry loop: join again only when the state was lost again meanwhile.
            while True:
                try:
                    written = await self._join(lost_epoch or self._remembered_epoch or "")
                except Relost:
                    lost_epoch = lost_epoch or "?"  # lost again while we re-seeded
                    continue
                break
            if written is None:
                return
            others = [label for site, label in self._sites.items() if site != self._site]
            wait = (
                f"; other hosts have {self._ttl / 2:.1f}s to re-seed theirs ({len(others)} known)"
                if others
                else ""
            )
            since = (
                "the claim state in Redis was lost since this host last worked the batch; "
                if lost_epoch is None and before not in (None, self.epoch)
                else ""
            )
            self._event(f"{since}claims re-seeded: {written} record(s) put back from here{wait}")

    async def _join(self, known_epoch: str) -> int | None:
        """HELLO, then RESEED when the epoch is not the one this site knew or began
        with a loss (returns how many records were written; None when there was
        nothing to re-seed)."""
        ttl_ms = round(self._ttl * 1000)
        known = [v for pair in self._sites.items() for v in pair]
        raw = await uncancellable(
            self._scripts["HELLO"](
                keys=self._keys,
                args=[
                    known_epoch,
                    self._site,
                    self._site_label,
                    ttl_ms // 2,  # every live worker's heartbeat notices within ttl/3
                    ttl_ms * 10,
                    *known,
                ],
            )
        )
        epoch = as_text(raw[0])
        await self.learn(pairs(raw[2]))
        if as_text(raw[3]) != "1":
            await self._joined_epoch(epoch)
            return None
        facts = [
            Reseed(key, record.digest or self._digests.get(key), record)
            for key, record in self._held.items()
        ]
        held = {fact.key for fact in facts}
        if self.reseed is not None:
            facts += [fact for fact in await self.reseed() if fact.key not in held]
        # The epoch is ours only once all is back: if Redis drops mid-way, the next
        # call joins and re-seeds again (the writes are idempotent).
        written = await self.put(facts, done=True, held=held, epoch=epoch)
        await self._joined_epoch(epoch)
        return written

    async def _joined_epoch(self, epoch: str) -> None:
        self.epoch = self._remembered_epoch = epoch
        await self._tell_joined(epoch)

    async def learn(self, sites: dict[str, str]) -> None:
        """Remember the sites that work the batch (and let ``on_join`` keep them)."""
        new = {site: label for site, label in sites.items() if self._sites.get(site) != label}
        if not new:
            return
        self._sites.update(new)
        if self.epoch is not None:
            await self._tell_joined(self.epoch)

    async def _tell_joined(self, epoch: str) -> None:
        """``on_join`` in a worker thread, one call at a time (the heartbeat and a
        join may both learn something), each given the state as it is by then: a
        slower call never writes an older state over a newer one."""
        if self._on_join is None:
            return
        async with self._joins_told:
            epoch = self.epoch or epoch
            await anyio.to_thread.run_sync(self._on_join, epoch, dict(self._sites))

    async def put(
        self,
        facts: list[Reseed],
        *,
        done: bool,
        held: frozenset[str] | set[str] = frozenset(),
        epoch: str | None = None,
    ) -> int:
        """RESEED ``facts`` in chunks; ``done``: this site has re-seeded all it knows."""
        written = 0
        for start in range(0, max(1, len(facts)), RESEED_CHUNK):
            flat: list[Any] = []
            for fact in facts[start : start + RESEED_CHUNK]:
                record = fact.record
                body = record.intent_body
                flat += [
                    claim_field(fact.key, fact.digest),
                    record.state,
                    attrs.evolve(record, item=fact.key, digest=fact.digest).to_json(),
                    record.generation_id or "",
                    "1" if fact.key in held else "0",
                    fingerprint(body) if body is not None else "",
                    record.owner or self._site_label,
                ]
            last = start + RESEED_CHUNK >= len(facts)
            argv: list[Any] = [epoch or self.epoch or "", self._owner, round(self._ttl * 1000), ""]
            argv += [self._site, "1" if done and last else "0", *flat]
            result = await uncancellable(self._scripts["RESEED"](keys=self._keys, args=argv))
            if isinstance(result, list):
                raise Relost
            written += int(result)
        return written
