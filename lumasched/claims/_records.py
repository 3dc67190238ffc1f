"""What the claims say: an item's record, the answer to a claim, a fact to put
back (re-exported by ``lumasched.claims``)."""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs

from lumasched.claims._identity import split_field
from lumasched.engine._claims import ItemClaims  # the seam it fills; re-exported

__all__ = ["FINISHED", "Claim", "ClaimRecord", "ClaimStatus", "ItemClaims", "Reseed"]

FINISHED = ("completed", "failed")


class ClaimStatus(enum.StrEnum):
    CLAIMED = "claimed"
    """Ours now; nobody else held it before (or we did)."""
    ADOPTED = "adopted"
    """Ours now; another worker held it and stopped renewing: continue from its record."""
    TAKEN = "taken"
    """Another live worker holds it."""
    DONE = "done"
    """Finished (completed or failed) by some worker."""
    UNKNOWN = "unknown"
    """Not claimable: Redis lost its state and a site that worked the batch has not
    re-seeded it (it is gone); it may have made this item. ``record.owner`` names
    the sites, one per line."""


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
    digest: str | None = None
    """The digest of the request this record is about (``request_digest``)."""

    @classmethod
    def from_json(cls, field: str, state: str, text: str) -> ClaimRecord:
        data: dict[str, Any] = json.loads(text) if text else {}
        fields = {f.name for f in attrs.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        key, digest = split_field(field)
        data.update(item=key, state=state or data.get("state") or "claimed")
        data.setdefault("digest", digest)
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


@attrs.frozen
class Reseed:
    """One fact to put back after Redis lost the state (or to import)."""

    key: str
    digest: str | None
    record: ClaimRecord
