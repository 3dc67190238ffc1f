"""examples/arq_stage.py: two arq worker processes share one API key's limits
through the Redis limiter, and each generation is created once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from lumasched.emulator import Emulator
from lumasched.limits import Family, FamilyLimits, Limits
from tests._redis_fixtures import RedisServer, redis_process  # noqa: F401

arq = pytest.importorskip("arq")
from arq.connections import RedisSettings  # noqa: E402

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    # arq 0.28 passes redis-py an argument redis 6+ deprecates (and ignores).
    pytest.mark.filterwarnings("ignore:.*retry_on_timeout:DeprecationWarning"),
]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "arq_stage.py"
API_KEY = "lm-arq-shared-key"
# Concurrency binds (2 images at a time for the whole account); the rate is roomy.
LIMITS = Limits(
    video=FamilyLimits(concurrency=2, requests=100, per_seconds=2.0),
    image=FamilyLimits(concurrency=2, requests=100, per_seconds=2.0),
)
LIMITS_TOML = """
[video]
concurrency = 2
requests = 100
per_seconds = 2

[image]
concurrency = 2
requests = 100
per_seconds = 2
"""
JOBS = 12


async def test_two_arq_workers_share_one_keys_limits(
    tmp_path: Path,
    redis_process: RedisServer,  # noqa: F811
) -> None:
    """Twelve jobs over two workers (four at a time each): never more than the
    account's two concurrent images, no 429, each generation created once, and
    enqueuing a key twice is still one job."""
    (tmp_path / "limits.toml").write_text(LIMITS_TOML)
    async with Emulator(fixed_latency=0.3, limits=LIMITS, api_key=API_KEY) as emu:
        env = {
            **os.environ,
            "LUMAAI_API_KEY": API_KEY,
            "LUMAAI_BASE_URL": emu.base_url,
            "LUMASCHED_REDIS_URL": redis_process.url,
            "LUMASCHED_LIMITS": str(tmp_path / "limits.toml"),
            "LUMA_OUT": str(tmp_path / "out"),
            "LUMA_ARQ_MAX_JOBS": "4",
            "PYTHONFAULTHANDLER": "1",
        }
        # Each worker's output goes to a file: an unread pipe could fill and block a
        # worker, and the file tells what a worker that would not stop was doing.
        logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
        workers = []
        for log in logs:
            with log.open("wb") as sink:
                workers.append(
                    await anyio.open_process(
                        [sys.executable, str(EXAMPLE)],
                        env=env,
                        cwd=tmp_path,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                )
        pool = await arq.create_pool(RedisSettings.from_dsn(redis_process.url))
        try:
            jobs = []
            for i in range(JOBS):
                body = {"prompt": f"a cat number {i}", "aspect_ratio": "1:1"}
                job = await pool.enqueue_job(
                    "generate", "image", body, f"cat-{i}", _job_id=f"cat-{i}"
                )
                assert job is not None
                jobs.append(job)
            again = await pool.enqueue_job(
                "generate", "image", {"prompt": "x"}, "cat-0", _job_id="cat-0"
            )
            assert again is None  # arq: one job per id
            with anyio.fail_after(60):
                results = [await job.result(timeout=60) for job in jobs]
        finally:
            await pool.aclose()
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            with anyio.move_on_after(20) as waiting:
                for worker in workers:
                    await worker.wait()
            if waiting.cancelled_caught:
                for worker in workers:
                    if worker.returncode is None:
                        worker.send_signal(signal.SIGABRT)  # faulthandler: every stack
                        with anyio.move_on_after(5):
                            await worker.wait()
                    if worker.returncode is None:
                        worker.kill()
                        await worker.wait()
                tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
                pytest.fail(f"a worker did not stop within 20 s of SIGTERM:\n{tails}")
    assert [r["key"] for r in results] == [f"cat-{i}" for i in range(JOBS)]
    assert all(Path(r["path"]).is_file() for r in results)
    assert len({r["worker"] for r in results}) == 2, "both workers took jobs"
    inspect = emu.inspect
    assert inspect.creates_total == JOBS and inspect.duplicate_creates == 0
    assert inspect.rate_limited_total == 0
    assert inspect.families[Family.IMAGE].peak_concurrency <= 2
    assert all(worker.returncode == 0 for worker in workers)
