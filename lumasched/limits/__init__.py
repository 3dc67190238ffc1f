"""Account limits per model family, and the ``Limiter`` seam that enforces them.

An account's limits are per model *family*: ``video`` (ray models, and reframe
video, modify video, upscale, audio) and ``image`` (photon models, and reframe
image). Each family has a concurrency cap (generations in flight, held from the
create until the generation is terminal) and a create-request rate
(``requests`` per ``per_seconds``, enforced as a sliding window: in *any* window
of ``per_seconds`` at most ``requests`` creates leave).

Inside: ``_base`` (the limits, the protocol, the adaptive arithmetic every
limiter applies), ``_inprocess`` (one process), ``redis`` (every process using
one API key; its Lua scripts in ``_redis_scripts``, connection helpers in
``_redis_util``). ``make_limiter`` picks one; the Redis limiter loads only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumasched.api._taxonomy import Family, family_of  # re-exported: they were defined here
from lumasched.limits._base import (
    BUILD_TIER,
    FamilyLimits,
    FamilyStatistics,
    Limiter,
    Limits,
    OrphanLease,
    default_window_margin,
)
from lumasched.limits._inprocess import InProcessLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "BUILD_TIER",
    "Family",
    "FamilyLimits",
    "FamilyStatistics",
    "InProcessLimiter",
    "Limiter",
    "Limits",
    "OrphanLease",
    "default_window_margin",
    "family_of",
    "make_limiter",
]


def make_limiter(
    limits: Limits = BUILD_TIER,
    *,
    redis_url: str | Redis | None = None,
    api_key: str | None = None,
    **kwargs: Any,
) -> Limiter:
    """An ``InProcessLimiter``, or a ``RedisLimiter`` when a Redis URL (or client)
    is given so that every process using the same API key shares the limits.
    ``kwargs`` go to the chosen constructor."""
    if redis_url is None:
        return InProcessLimiter(limits, **kwargs)
    from lumasched.limits.redis import RedisLimiter

    return RedisLimiter(redis_url, limits, api_key=api_key, **kwargs)
