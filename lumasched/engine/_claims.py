"""The seam the engine leaves for cross-host claims: what ``Scheduler`` asks of a
claim store. ``lumasched.claims.ClaimStore`` fills it; the engine never imports
the claims package."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ItemClaims"]


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
