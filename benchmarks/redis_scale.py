"""Redis: one process against four sharing the same limits, and Redis commands per job.

One emulator (its own process) enforces the limits; a private ``redis-server``
on a free port holds the shared limiter state. The same batch runs three ways:
one process with the in-process limiter (the reference), one process with the
``RedisLimiter``, and four processes with a quarter of the jobs each, started
together, sharing one ``RedisLimiter`` state. The limits are the bottleneck, so
throughput (jobs / makespan) should be the same all three ways, with zero 429s
and the emulator's peaks at (never above) the limits. Redis cost is read from
``INFO commandstats`` deltas: round trips per job are the commands the client
sends (each ``EVALSHA`` runs one atomic script), reported apart from the
commands those scripts run inside Redis; a fresh, empty server per run keeps the
counts clean and measures what a first deployment gets (no ``lumasched limits
--init`` beforehand: the workers create the state on their first call).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import (
    EmulatorProcess,
    RedisServer,
    Report,
    run_child,
)
from benchmarks.bound import best_makespan
from benchmarks.makespan import limits_toml

NAME = "redis"

TINY = {"jobs": 16, "concurrency": 4, "requests": 8, "per_seconds": 0.5, "latency": 0.2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--per-seconds", type=float, default=2.0)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=4)


CLIENT_COMMANDS = frozenset(
    {"evalsha", "eval", "evalsha_ro", "eval_ro", "script|load", "hello", "subscribe", "ping"}
)
"""Commands the client sends itself; the rest (ZADD, HSET, TIME, PUBLISH, ...) run
inside the Lua scripts and cost no round trip. ``INFO commandstats`` counts both."""


def _breakdown(commands: dict[str, int], jobs: int) -> str:
    return ", ".join(f"{k} {v / jobs:.2f}" for k, v in sorted(commands.items()))


def one_way(args: argparse.Namespace, processes: int, use_redis: bool) -> dict[str, Any]:
    video = {
        "concurrency": args.concurrency,
        "requests": args.requests,
        "per_seconds": args.per_seconds,
    }
    share = args.jobs // processes
    with tempfile.TemporaryDirectory(prefix="lumasched-redis-") as tmp:
        limits = Path(tmp, "limits.toml")
        limits.write_text(limits_toml(video), encoding="utf-8")
        emu_args = ["--limits", str(limits), "--fixed-latency", str(args.latency)]
        with EmulatorProcess(emu_args) as emu, RedisServer() as redis:
            before = redis.commandstats()
            start_at = time.time() + 3.0  # every child imported and connected by then
            kwargs = [
                {
                    "base_url": emu.base_url,
                    "api_key": emu.api_key,
                    "jobs": share if i < processes - 1 else args.jobs - share * i,
                    "offset": share * i,
                    "kind": "video",
                    "limits": {"video": video},
                    "redis_url": redis.url if use_redis else None,
                    "start_at": start_at,
                }
                for i in range(processes)
            ]
            with ThreadPoolExecutor(processes) as pool:
                results = list(
                    pool.map(lambda kw: run_child("benchmarks._engine:run_batch", kw), kwargs)
                )
            after = redis.commandstats()
            seen = emu.inspect()
    commands = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        "makespan": max(r["makespan"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "redis_commands": {k: v for k, v in commands.items() if v},
        "emulator": {
            "rate_limited_total": seen["rate_limited_total"],
            "video": seen["families"]["video"],
            "creates_total": seen["creates_total"],
            "duplicate_creates": seen["duplicate_creates"],
        },
        "children": results,
    }


def run(args: argparse.Namespace) -> Report:
    report = Report()
    bound = best_makespan(
        args.jobs,
        args.latency,
        concurrency=args.concurrency,
        requests=args.requests,
        per_seconds=args.per_seconds,
    )
    limits = f"C={args.concurrency}, R={args.requests}/{args.per_seconds:g}s, L={args.latency:g}s"
    ways = [
        ("1 process, in-process limiter", 1, False),
        ("1 process, Redis limiter", 1, True),
        (f"{args.processes} processes, one Redis limiter", args.processes, True),
    ]
    throughput = {}
    for label, processes, use_redis in ways:
        result = one_way(args, processes, use_redis)
        scen = f"{label} ({args.jobs} jobs, {limits})"
        rate = args.jobs / result["makespan"]
        throughput[label] = rate
        fam = result["emulator"]["video"]
        report.add(NAME, scen, "throughput", rate, "jobs/s", f"bound {args.jobs / bound:.2f}")
        report.add(NAME, scen, "makespan / bound", result["makespan"] / bound, "")
        report.add(
            NAME,
            scen,
            "429s",
            result["emulator"]["rate_limited_total"],
            "",
            "0",
            result["emulator"]["rate_limited_total"] == 0,
        )
        report.add(
            NAME,
            scen,
            "peak concurrency / creates per window",
            fam["peak_concurrency"],
            "",
            f"<= {args.concurrency}",
            fam["peak_concurrency"] <= args.concurrency
            and fam["peak_window_creates"] <= args.requests,
            note=f"peak creates in a window {fam['peak_window_creates']} (<= {args.requests})",
        )
        if use_redis:
            commands = result["redis_commands"]
            trips = {k: v for k, v in commands.items() if k in CLIENT_COMMANDS}
            inner = {k: v for k, v in commands.items() if k not in CLIENT_COMMANDS}
            report.add(
                NAME,
                scen,
                "Redis round trips per job",
                sum(trips.values()) / args.jobs,
                "",
                note=_breakdown(trips, args.jobs),
            )
            report.add(
                NAME,
                scen,
                "Redis commands inside scripts per job",
                sum(inner.values()) / args.jobs,
                "",
                note=_breakdown(inner, args.jobs),
            )
        report.details[label] = result
    base = throughput[ways[1][0]]
    shared = throughput[ways[2][0]]
    report.add(
        NAME,
        f"{args.processes} processes vs 1 (Redis)",
        "throughput ratio",
        shared / base,
        "",
        "0.95 - 1.05 (same)",
        0.95 <= shared / base <= 1.05,
    )
    return report
