"""``lumasched limits``: live state of shared limits, read from Redis."""

from __future__ import annotations

import json
import uuid

import anyio
import pytest

from lumasched.cli._limits import main
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.limits.redis import RedisLimiter, account_id
from tests._redis_fixtures import redis_server, refused_port, until_waiting  # noqa: F401

KEY = "sk-cli-test-key-123"
V = Family.VIDEO


async def test_shows_holders_generations_and_waiters(
    redis_server: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table names holders, generations, waiters and window use, never the API key."""
    namespace = "t" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("LUMAAI_API_KEY", KEY)
    limits = Limits(video=FamilyLimits(2, 20, 60.0))
    async with RedisLimiter(
        redis_server, limits, api_key=KEY, namespace=namespace, owner="worker-a"
    ) as limiter:
        await limiter.bootstrap()
        await limiter.acquire(V, "lease-one")
        await limiter.acquire(V, "lease-two")
        await limiter.mark_submitted(V, "lease-two", "gen-123")
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, V, "lease-three")
            await until_waiting(limiter, V, 1)
            code = await anyio.to_thread.run_sync(
                main, ["--redis", redis_server, "--namespace", namespace]
            )
            tg.cancel_scope.cancel()
        text = capsys.readouterr().out
        assert code == 0
        assert account_id(KEY) in text and KEY not in text
        assert "video: 2/2 slots held, 2/20 creates in the last 61.8s, 1 waiting" in text
        assert "worker-a" in text and "gen-123" in text and "(not submitted)" in text
        code = await anyio.to_thread.run_sync(
            main, ["--redis", redis_server, "--namespace", namespace, "--json"]
        )
        data = json.loads(capsys.readouterr().out)
        video = data[account_id(KEY)][0]
        assert (video["family"], video["held"], video["window_used"]) == ("video", 2, 2)
        for lease in ("lease-one", "lease-two"):
            await limiter.release(V, lease)


async def test_init_creates_the_state_once(
    redis_server: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--init creates the account's state (found by --all); a second --init leaves it."""
    namespace = "t" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("OTHER_KEY_VAR", KEY)
    args = ["--redis", redis_server, "--namespace", namespace, "--api-key-env", "OTHER_KEY_VAR"]
    assert await anyio.to_thread.run_sync(main, [*args, "--init"]) == 0
    assert await anyio.to_thread.run_sync(main, [*args, "--init"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "state created",
        "state already exists: left alone",
    ]
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    code = await anyio.to_thread.run_sync(
        main, ["--redis", redis_server, "--namespace", namespace, "--all"]
    )
    assert code == 0
    assert f"account {account_id(KEY)}" in capsys.readouterr().out


def test_without_a_redis_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --redis and no LUMASCHED_REDIS_URL: exit 2."""
    monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
    assert main([]) == 2


def test_unreachable_redis_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A Redis that does not answer: exit 1 with a message, no traceback."""
    with refused_port() as port:
        assert main(["--redis", f"redis://127.0.0.1:{port}/0"]) == 1
    assert "cannot reach Redis" in capsys.readouterr().err
