"""lumasched as a stage inside arq (asyncio + Redis): any number of arq workers on
any number of hosts share one API key's limits through Redis (docs/web-apps.md).

A worker (run as many as you like, on any host; each keeps its own journal)::

    export LUMAAI_API_KEY=... LUMASCHED_REDIS_URL=redis://redis.internal:6379/0
    python examples/arq_stage.py                 # or: arq arq_stage.WorkerSettings

Enqueue from anywhere (a web app, a script)::

    pool = await arq.create_pool(RedisSettings.from_dsn(url))
    job = await pool.enqueue_job("generate", "image", {"prompt": "a fox"}, "fox", _job_id="fox")
    print(await job.result())

Each job has a stable key (here also arq's job id, so enqueuing it twice is one job).
The job runs on one worker, whose ``Luma`` creates it once and journals it; the
Redis limiter keeps every worker together within the account's concurrency and
create rate. Environment: ``LUMASCHED_LIMITS`` (a limits TOML file; the Build tier
otherwise), ``LUMA_OUT`` (the folder holding each worker's ``worker-<pid>/``),
``LUMA_ARQ_MAX_JOBS`` (jobs in flight per worker).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from arq import run_worker
from arq.connections import RedisSettings

import lumasched

REDIS_URL = os.environ.get("LUMASCHED_REDIS_URL", "redis://127.0.0.1:6379/0")


async def startup(ctx: dict[str, Any]) -> None:
    limits_file = os.environ.get("LUMASCHED_LIMITS")
    limits = lumasched.Limits.from_toml(limits_file) if limits_file else lumasched.BUILD_TIER
    # One journal per worker process: a journal has one owner.
    out = Path(os.environ.get("LUMA_OUT", "out")) / f"worker-{os.getpid()}"
    luma = lumasched.Luma(out, redis_url=REDIS_URL, limits=limits)
    await luma.__aenter__()
    ctx["luma"] = luma


async def shutdown(ctx: dict[str, Any]) -> None:
    # Stops creating; what is in flight stays in this worker's journal.
    await ctx["luma"].__aexit__(None, None, None)


async def generate(ctx: dict[str, Any], kind: str, request: dict[str, Any], key: str) -> Any:
    """The stage: one request in, one verified file out (or the job's error)."""
    luma: lumasched.Luma = ctx["luma"]
    result = await luma.generate(lumasched.request_from_dict(kind, request), key=key)
    return {
        "key": key,
        "path": result.path,
        "sha256": result.sha256,
        "generation_id": result.generation.id,
        "worker": os.getpid(),
    }


class WorkerSettings:
    functions = [generate]  # noqa: RUF012  (arq reads these class attributes)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    max_jobs = int(os.environ.get("LUMA_ARQ_MAX_JOBS", "50"))
    job_timeout = 3600
    max_tries = 3  # a retried job resumes from the journal, never pays twice


if __name__ == "__main__":
    run_worker(WorkerSettings)  # type: ignore[arg-type]
