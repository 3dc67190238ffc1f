"""Scale curve: jobs per second of pure scheduler overhead at 1k, 10k and 100k jobs.

No network and no emulator: the Scheduler drives an in-memory fake client
(``FakeClient``) whose generations are created ``queued`` and are ``completed``
at their first status check (so every job goes through create, journal, poll
loop and completion). Limits are out of the way; the journal is a real SQLite
file. Input is streamed through ``Scheduler.as_completed`` so that the job table
grows to the full size. Two curves: without a journal (the scheduler and poll
loop alone, at 1k/10k/100k) and with the SQLite journal (``synchronous=FULL``:
fsynced, group-committed writes, so fewer jobs per second; at 1k/10k/100k). Each
size runs in a fresh process. Throughput must stay flat as the batch grows: a
falling jobs/s means per-job cost grows with the number of jobs (an O(n^2) scan
of the job table or the journal).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import Report, run_child

NAME = "scale"

TINY = {"sizes": [100, 300], "journal_sizes": [100, 300]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="batch sizes"
    )
    parser.add_argument(
        "--journal-sizes",
        type=int,
        nargs="*",
        default=[1_000, 10_000, 100_000],
        help="batch sizes for the curve with the SQLite journal (fsynced commits: slower)",
    )
    parser.add_argument(
        "--max-pending", type=int, default=1_000, help="as_completed buffer (input read-ahead)"
    )


class FakeClient:
    """The part of ``LumaClient`` the scheduler uses, in memory and instant."""

    def __init__(self) -> None:
        self._generations: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self.calls = {"create": 0, "get": 0, "list": 0}

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def _json(self, gid: str) -> dict[str, Any]:
        data = self._generations[gid]
        # Completed at its first status check: a zero-latency generation.
        if data["state"] == "queued" and data["checked"]:
            data["state"] = "completed"
            data["assets"] = {"image": f"http://fake.invalid/{gid}.jpg"}
        data["checked"] = True
        return {k: v for k, v in data.items() if k != "checked"}

    async def create(self, request: Any, **options: Any) -> Any:
        from lumasched.api import Generation

        self.calls["create"] += 1
        gid = str(uuid.uuid4())
        self._generations[gid] = {
            "id": gid,
            "state": "queued",
            "created_at": datetime.now(UTC).isoformat(),
            "generation_type": request.kind,
            "model": request.model,
            "request": request.to_body(),
            "assets": None,
            "failure_reason": None,
            "checked": False,
        }
        self._order.append(gid)
        return Generation.from_json(self._json(gid))

    async def get(self, generation_id: str) -> Any:
        from lumasched.api import Generation
        from lumasched.errors import NotFoundError

        self.calls["get"] += 1
        if generation_id not in self._generations:
            raise NotFoundError(404, "not found")
        return Generation.from_json(self._json(generation_id))

    async def list(self, limit: int = 100, offset: int = 0) -> Any:
        from lumasched.api import Generation, GenerationPage

        self.calls["list"] += 1
        end = len(self._order) - offset
        ids = self._order[max(0, end - limit) : max(0, end)][::-1]
        return GenerationPage(
            generations=tuple(Generation.from_json(self._json(g)) for g in ids),
            count=len(ids),
            has_more=end - limit > 0,
            limit=limit,
            offset=offset,
        )


async def run_size(jobs: int, journal: bool, max_pending: int) -> dict[str, Any]:
    from benchmarks._engine import requests
    from lumasched.engine.scheduler import Scheduler
    from lumasched.limits import FamilyLimits, InProcessLimiter, Limits
    from lumasched.store.journal import Journal

    big = FamilyLimits(concurrency=1_000_000, requests=10_000_000, per_seconds=1.0)
    limiter = InProcessLimiter(Limits(video=big, image=big))
    client = FakeClient()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="lumasched-scale-") as tmp:
        jnl = Journal(Path(tmp, "journal.db")) if journal else None
        async with limiter, Scheduler(client, limiter=limiter, journal=jnl) as scheduler:  # type: ignore[arg-type]
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            async for job in scheduler.as_completed(
                requests(jobs, "image"), max_pending=max_pending
            ):
                if job.error is not None:
                    failed += 1
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        if jnl is not None and hasattr(jnl, "close"):
            jnl.close()
    return {"jobs": jobs, "failed": failed, "wall": wall, "cpu": cpu, "calls": client.calls}


def run(args: argparse.Namespace) -> Report:
    report = Report()
    curve(report, args.sizes, journal=False, max_pending=args.max_pending)
    if args.journal_sizes:
        curve(report, args.journal_sizes, journal=True, max_pending=args.max_pending)
    return report


def curve(report: Report, sizes: list[int], *, journal: bool, max_pending: int) -> None:
    what = "fake client, " + ("SQLite journal" if journal else "no journal")
    rates = []
    for size in sizes:
        result = run_child(
            "benchmarks.scale:run_size",
            {"jobs": size, "journal": journal, "max_pending": max_pending},
            timeout=900,
        )
        rate = size / result["wall"]
        rates.append(rate)
        scen = f"{size:,} jobs ({what})"
        report.add(NAME, scen, "jobs / s", rate, "jobs/s")
        report.add(NAME, scen, "CPU per job", result["cpu"] / size * 1e3, "ms")
        report.add(NAME, scen, "peak RSS", result["max_rss_mb"], "MB")
        report.details[f"{size}{'-journal' if journal else ''}"] = result
    if len(rates) > 1:
        flatness = rates[-1] / rates[0]
        report.add(
            NAME,
            f"{sizes[-1]:,} vs {sizes[0]:,} jobs ({what})",
            "jobs/s ratio (largest / smallest)",
            flatness,
            "",
            ">= 0.8 (linear)",
            flatness >= 0.8,
        )
