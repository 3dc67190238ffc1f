"""The limits every host shares in Redis, read from outside the limiter: the
live state of a family (``lumasched limits``, ``SharedLimitsMetrics``), the
accounts that have one, and the bootstrap of a brand-new state. Re-exported by
``lumasched.limits.redis``; the keys and scripts are ``_redis_scripts``'."""

from __future__ import annotations

import attrs
import redis.asyncio as aioredis

from lumasched.api._taxonomy import Family
from lumasched.limits import _redis_scripts as lua
from lumasched.limits._redis_util import as_text, pairs

__all__ = [
    "FamilyState",
    "LeaseInfo",
    "bootstrap_state",
    "family_prefix",
    "inspect_state",
    "list_accounts",
]


def family_prefix(namespace: str, account: str, family: Family) -> str:
    return f"{namespace}:{{{account}:{family.value}}}"


@attrs.frozen
class LeaseInfo:
    """One held slot as ``lumasched limits`` shows it."""

    lease_id: str
    owner: str
    generation_id: str | None
    expires_in: float | None
    """Seconds until the lease expires unless renewed; None for an orphan."""
    orphaned_for: float | None = None


@attrs.frozen
class FamilyState:
    """The live state of one family in Redis (read without changing anything)."""

    family: Family
    concurrency_limit: int | None
    requests: int | None
    window: float | None
    leases: tuple[LeaseInfo, ...]
    waiting: int
    window_used: int
    factor: float
    penalty_remaining: float
    hold_remaining: float
    counters: dict[str, int]

    @property
    def held(self) -> int:
        return len(self.leases)


async def inspect_state(
    client: aioredis.Redis, namespace: str, account: str, family: Family, *, window: float = 60.0
) -> FamilyState:
    """Read one family's state (``lumasched limits``)."""
    keys = [f"{family_prefix(namespace, account, family)}:{name}" for name in lua.KEY_NAMES]
    raw = await client.eval(lua.INSPECT, len(keys), *keys, str(int(window * 1000)))
    now = int(raw[0])
    meta = pairs(raw[1])
    gens = pairs(raw[4])
    owners = pairs(raw[5])
    leases: list[LeaseInfo] = []
    for flat, orphan in ((raw[2], False), (raw[3], True)):
        for lease_id, score in pairs(flat).items():
            ms = float(score)
            gen = gens.get(lease_id)
            dead = not orphan and ms <= now
            if dead and gen is None:
                continue  # expired and unsubmitted: reclaimed at the next call
            leases.append(
                LeaseInfo(
                    lease_id=lease_id,
                    owner=owners.get(lease_id, "?"),
                    generation_id=gen,
                    expires_in=None if orphan or dead else (ms - now) / 1000,
                    orphaned_for=(now - ms) / 1000 if orphan else (0.0 if dead else None),
                )
            )

    def number(name: str) -> float:
        return float(meta.get(name) or 0)

    window_ms = meta.get("window_ms")
    return FamilyState(
        family=family,
        concurrency_limit=int(meta["limit_n"]) if "limit_n" in meta else None,
        requests=int(meta["limit_r"]) if "limit_r" in meta else None,
        window=int(window_ms) / 1000 if window_ms else None,
        leases=tuple(leases),
        waiting=int(raw[6]),
        window_used=int(raw[7]),
        factor=float(meta.get("factor") or 1),
        penalty_remaining=max(0.0, (number("blocked_until") - now) / 1000),
        hold_remaining=max(0.0, (number("hold_until") - now) / 1000),
        counters={
            name: int(meta[name])
            for name in (
                "granted",
                "rate_limited",
                "expired_count",
                "adopted_count",
                "reinsert_count",
                "regranted_count",
                "late_count",
                "lost_count",
                "gap_count",
                "stale_count",
            )
            if name in meta
        },
    )


async def bootstrap_state(client: aioredis.Redis, namespace: str, account: str) -> bool:
    """Mark an account's missing limiter state as new rather than lost (no hold)."""
    created = False
    for family in Family:
        keys = [f"{family_prefix(namespace, account, family)}:{name}" for name in lua.KEY_NAMES]
        created = bool(await client.eval(lua.BOOTSTRAP, len(keys), *keys)) or created
    return created


async def list_accounts(client: aioredis.Redis, namespace: str) -> list[str]:
    """Account ids that have limiter state under this namespace."""
    found: set[str] = set()
    async for key in client.scan_iter(match=f"{namespace}:{{*}}:meta", count=500):
        inner = as_text(key)[len(namespace) + 2 :].split("}", 1)[0]
        found.add(inner.rsplit(":", 1)[0])
    return sorted(found)
