"""What the Redis users share (lumasched.limits._redis_util), and the errors' one home."""

from __future__ import annotations

import redis.asyncio as aioredis

from lumasched import claims, errors
from lumasched.engine import jobs
from lumasched.limits import redis as redis_limiter
from lumasched.limits._redis_util import DEFAULT_SOCKET_TIMEOUT, as_text, connect, pairs


async def test_connect_builds_a_client_with_timeouts_or_passes_one_through() -> None:
    """A URL gives an owned client with the socket timeouts; a client is used as given."""
    client, owned = connect("redis://127.0.0.1:1/0")
    try:
        assert owned and isinstance(client, aioredis.Redis)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT
        assert kwargs["socket_connect_timeout"] == DEFAULT_SOCKET_TIMEOUT
        assert connect(client) == (client, False)
    finally:
        await client.aclose()


def test_replies_decode_to_text() -> None:
    """Flat key/value replies become a dict of text, bytes or not."""
    assert as_text(b"caf\xc3\xa9") == "café" and as_text(3) == "3"
    assert pairs([b"a", b"1", "b", 2]) == {"a": "1", "b": "2"}


def test_limiter_and_claims_share_one_set_of_helpers() -> None:
    """RedisLimiter and ClaimStore use the same account id and outage errors."""
    assert claims.account_id is redis_limiter.account_id
    assert claims.REDIS_DOWN is redis_limiter.REDIS_DOWN


def test_job_errors_live_in_the_error_tree() -> None:
    """JobCancelled and JobDeferred are defined in lumasched.errors, drawn in its tree,
    and still importable from lumasched.engine.jobs."""
    assert jobs.JobCancelled is errors.JobCancelled
    assert jobs.JobDeferred is errors.JobDeferred
    assert errors.JobCancelled.__module__ == "lumasched.errors"
    assert issubclass(errors.JobDeferred, errors.LumaError)
    tree = errors.__doc__ or ""
    assert "├── JobCancelled" in tree and "├── JobDeferred" in tree
