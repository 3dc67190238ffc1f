"""What ``RedisLimiter``, ``ClaimStore`` and ``lumasched limits`` share about Redis:
how a client is built, which errors mean "Redis is down", the account part of
every key, decoding replies, and running a command to completion."""

from __future__ import annotations

import asyncio
import hashlib
import math
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lumasched.api._retry import RetryPolicy

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "REDIS_DOWN",
    "account_id",
    "as_text",
    "connect",
    "pairs",
    "redis_retry",
    "uncancellable",
]

DEFAULT_SOCKET_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 30
"""Seconds a pooled connection may sit idle before it is pinged again on use."""

REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OSError,
)
"""Errors that mean "Redis is unreachable or read-only right now": wait and retry."""


def redis_retry(max_wait: float) -> RetryPolicy:
    """Calls retried while Redis is down: 50 ms doubling up to ``max_wait``, for
    as long as the outage lasts (no attempt or time limit: nothing is lost, the
    work pauses)."""
    return RetryPolicy(
        attempts=sys.maxsize, initial=0.05, max=max_wait, jitter=0.0, total_timeout=math.inf
    )


T = TypeVar("T")


def connect(url_or_client: str | aioredis.Redis) -> tuple[aioredis.Redis, bool]:
    """A client for a Redis URL (with our timeouts), or the client given; and
    whether the caller owns it (must close it)."""
    if not isinstance(url_or_client, str):
        return url_or_client, False
    client = aioredis.Redis.from_url(
        url_or_client,
        socket_timeout=DEFAULT_SOCKET_TIMEOUT,
        socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT,
        health_check_interval=HEALTH_CHECK_INTERVAL,
    )
    return client, True


def account_id(api_key: str | None) -> str:
    """The account part of every key: a hash of the API key, never the key."""
    if not api_key:
        return "anonymous"
    return hashlib.sha256(b"lumasched-account:" + api_key.encode()).hexdigest()[:16]


def as_text(value: Any) -> str:
    """A Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    """``[k1, v1, k2, v2, ...]`` (HGETALL, ZRANGE WITHSCORES) as a dict of text."""
    return {as_text(flat[i]): as_text(flat[i + 1]) for i in range(0, len(flat), 2)}


async def uncancellable(call: Awaitable[T]) -> T:
    """Run one Redis command to completion even if the caller is cancelled.

    Cancelling redis-py mid-command has a history of corrupting connections;
    here the command finishes in its own task and the cancellation is
    re-raised once its outcome is known (bounded by the socket timeout).
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the caller's exception wins
        raise
