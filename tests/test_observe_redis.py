"""The shared-limit state in Redis as metrics, from any one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import anyio
import pytest

from lumasched.cli._limits import main as limits_main
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.limits.redis import RedisLimiter, account_id
from lumasched.observe import SharedLimitsMetrics
from lumasched.observe.prometheus import MetricsServer
from tests._observe_fixtures import Scrape, scrape, scrape_sync, value
from tests._redis_fixtures import (  # noqa: F401
    redis_server,
    refused_port,
    until_waiting,
)

KEY = "sk-observe-test-key-456"
V = Family.VIDEO
LIMITS = Limits(video=FamilyLimits(2, 20, 60.0))

pytestmark = pytest.mark.redis


def _video(s: Scrape, name: str, account: str) -> float:
    return value(s, name, account=account, family="video")


async def test_shared_state_is_read_at_each_scrape_and_matches_limits_json(
    redis_server: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Slots held, window use, waiters and limits as `lumasched limits --json` shows
    them; a release shows at the next scrape; no key in any label."""
    namespace = "t" + uuid.uuid4().hex[:10]
    account = account_id(KEY)
    async with (
        RedisLimiter(redis_server, LIMITS, api_key=KEY, namespace=namespace) as limiter,
        SharedLimitsMetrics(redis_server, namespace=namespace) as shared,
        MetricsServer([shared], port=0) as server,
    ):
        await limiter.bootstrap()
        await limiter.acquire(V, "lease-one")
        await limiter.acquire(V, "lease-two")
        await limiter.mark_submitted(V, "lease-two", "gen-1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, V, "lease-three")
            await until_waiting(limiter, V, 1)
            busy = await scrape(server.url)
            monkeypatch.setenv("LUMAAI_API_KEY", KEY)
            code = await anyio.to_thread.run_sync(
                limits_main, ["--redis", redis_server, "--namespace", namespace, "--json"]
            )
            tg.cancel_scope.cancel()
        shown = json.loads(capsys.readouterr().out)[account][0]
        await limiter.release(V, "lease-one")
        later = await scrape(server.url)
        await limiter.release(V, "lease-two")
    assert code == 0
    assert value(busy, "lumasched_shared_redis_up") == 1
    assert _video(busy, "lumasched_shared_concurrency_in_use", account) == shown["held"] == 2
    assert _video(busy, "lumasched_shared_window_creates", account) == shown["window_used"] == 2
    assert _video(busy, "lumasched_shared_limiter_waiting", account) == shown["waiting"] == 1
    assert _video(busy, "lumasched_shared_concurrency_limit", account) == 2
    assert _video(busy, "lumasched_shared_window_limit", account) == 20
    assert _video(busy, "lumasched_shared_backoff_factor", account) == shown["factor"] == 1.0
    assert _video(later, "lumasched_shared_concurrency_in_use", account) == 1
    labels = {v for (_, ls) in busy for _, v in ls}
    assert KEY not in labels and "gen-1" not in labels and "lease-one" not in labels


async def test_redis_away_is_a_metric_not_a_failed_scrape() -> None:
    """Redis unreachable: the scrape still answers, with redis_up 0."""
    with refused_port() as port:
        async with (
            SharedLimitsMetrics(f"redis://127.0.0.1:{port}/0") as shared,
            MetricsServer([shared], port=0) as server,
        ):
            with anyio.fail_after(30):
                seen = await scrape(server.url)
    assert value(seen, "lumasched_shared_redis_up") == 0


@pytest.mark.slow
def test_limits_command_serves_metrics_until_ctrl_c(redis_server: str) -> None:  # noqa: F811
    """`lumasched limits --metrics-port` serves the account's state; Ctrl-C ends it (130)."""
    namespace = "t" + uuid.uuid4().hex[:10]

    async def hold() -> None:
        limiter = RedisLimiter(redis_server, LIMITS, api_key=KEY, namespace=namespace)
        async with limiter:
            await limiter.bootstrap()
            await limiter.acquire(V, "held")
            await limiter.mark_submitted(V, "held", "gen-9")

    anyio.run(hold)
    env = {**os.environ, "LUMAAI_API_KEY": KEY}
    command = [
        sys.executable, "-m", "lumasched", "limits", "--redis", redis_server,
        # port 0: the one it gets is in its first line (a port picked here could
        # be taken by a test running in parallel before the child listens)
        "--namespace", namespace, "--metrics-port", "0",
    ]  # fmt: skip
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("serving http://127.0.0.1:"), first
            seen = scrape_sync(first.split()[1], timeout=10)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    account = account_id(KEY)
    assert value(seen, "lumasched_shared_concurrency_in_use", account=account, family="video") == 1
