"""A batch run in a child process, for the SIGKILL test: ``python -m tests._sigkill_child
BASE_URL JOURNAL OUT_DIR N``. Submits N keyed jobs (mixed image/video) with a journal and
prints ``done`` when every one has completed."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from lumasched.api import ImageRequest, LumaClient, VideoRequest
from lumasched.api._retry import RetryPolicy
from lumasched.engine.poller import Poller
from lumasched.engine.scheduler import Scheduler
from lumasched.limits import FamilyLimits, InProcessLimiter, Limits
from lumasched.store.journal import Journal

LIMITS = Limits(
    video=FamilyLimits(concurrency=3, requests=30, per_seconds=1.0),
    image=FamilyLimits(concurrency=4, requests=40, per_seconds=1.0),
)
WINDOW_MARGIN = 0.2  # as in tests/_engine_fixtures.py: above the loop lag of a loaded machine


def items(n: int) -> list[tuple[str, ImageRequest | VideoRequest]]:
    return [
        (f"item-{i}", VideoRequest(f"a video of {i}") if i % 3 == 0 else ImageRequest(f"image {i}"))
        for i in range(n)
    ]


async def main(base_url: str, journal_path: str, out_dir: str, n: int) -> None:
    with Journal(journal_path, batch="sigkill") as journal:
        async with LumaClient("k", base_url, retry=RetryPolicy.for_tests()) as client:
            scheduler = Scheduler(
                client,
                limiter=InProcessLimiter(LIMITS, window_margin=WINDOW_MARGIN),
                journal=journal,
                out_dir=Path(out_dir),
                poller=Poller(client, first_probe=0.05, min_interval=0.02, max_interval=0.3),
                reconcile_settle=0.5,
                reconcile_interval=0.1,
                reconcile_give_up=20.0,
            )
            async with scheduler:
                jobs = [scheduler.submit(request, key=key) for key, request in items(n)]
                for job in jobs:
                    await job
    print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
