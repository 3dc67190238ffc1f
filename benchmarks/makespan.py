"""Makespan against the best the limits allow, and status requests per job.

For each scenario an emulator (its own process) enforces the limits with a
fixed latency per job; a fresh client process runs the batch through the
Scheduler (no downloads, so the makespan is create-to-noticed-completion) and
reports when the last job was seen finished. ``bound`` is the exact best
makespan (``benchmarks.bound``): every create as early as both limits allow,
every completion noticed instantly. Status requests are GETs plus list calls
per job, counted by the emulator; the ``callbacks`` scenario repeats the
concurrency-bound batch with ``callback_url`` set and a receiver that hints the
poller.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import EmulatorProcess, Report, run_child
from benchmarks.bound import best_makespan

NAME = "makespan"

TINY = {
    "jobs_c": 12,
    "concurrency": 3,
    "latency": 0.2,
    "jobs_r": 6,
    "requests": 2,
    "per_seconds": 0.3,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs-c", type=int, default=120, help="jobs, concurrency-bound")
    parser.add_argument("--concurrency", type=int, default=10, help="C, concurrency-bound")
    parser.add_argument("--latency", type=float, default=1.0, help="L seconds per job")
    parser.add_argument("--jobs-r", type=int, default=60, help="jobs, rate-bound")
    parser.add_argument("--requests", type=int, default=20, help="R creates per window")
    parser.add_argument("--per-seconds", type=float, default=2.0, help="W window seconds")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["concurrency", "rate", "callbacks"],
        help="run only these (default: all three)",
    )


def limits_toml(video: dict[str, Any]) -> str:
    lines = ["[video]"] + [f"{k} = {v}" for k, v in video.items()]
    lines += ["[image]", "concurrency = 100000", "requests = 1000000", "per_seconds = 1.0"]
    return "\n".join(lines) + "\n"


def scenario(
    report: Report,
    name: str,
    *,
    jobs: int,
    latency: float,
    video: dict[str, Any],
    callbacks: bool = False,
) -> None:
    bound = best_makespan(
        jobs,
        latency,
        concurrency=video["concurrency"],
        requests=video["requests"],
        per_seconds=video["per_seconds"],
    )
    with tempfile.TemporaryDirectory(prefix="lumasched-bench-") as tmp:
        limits_file = Path(tmp, "limits.toml")
        limits_file.write_text(limits_toml(video), encoding="utf-8")
        emulator_args = ["--limits", str(limits_file), "--fixed-latency", str(latency)]
        with EmulatorProcess(emulator_args) as emu:
            result = run_child(
                "benchmarks._engine:run_batch",
                {
                    "base_url": emu.base_url,
                    "api_key": emu.api_key,
                    "jobs": jobs,
                    "kind": "video",
                    "limits": {"video": video},
                    "callbacks": callbacks,
                },
            )
            seen = emu.inspect()
    fam = seen["families"]["video"]
    ratio = result["makespan"] / bound if bound else 0.0
    scen = f"{name} ({jobs} jobs, C={video['concurrency']}, R={video['requests']}/"
    scen += f"{video['per_seconds']:g}s, L={latency:g}s)"
    status_per_job = seen["polls"] / jobs
    report.add(NAME, scen, "makespan", result["makespan"], "s", f"bound {bound:.2f} s")
    report.add(NAME, scen, "makespan / bound", ratio, "", "<= 1.05", ratio <= 1.05)
    report.add(
        NAME, scen, "429s", seen["rate_limited_total"], "", "0", seen["rate_limited_total"] == 0
    )
    goal = "" if callbacks else "<= 2"
    report.add(
        NAME,
        scen,
        "status requests / job",
        status_per_job,
        "",
        goal,
        None if callbacks else status_per_job <= 2,
        note=f"{seen['gets']} GETs + {seen['lists']} lists",
    )
    report.add(
        NAME,
        scen,
        "peak concurrency",
        fam["peak_concurrency"],
        "",
        f"<= {video['concurrency']}",
        fam["peak_concurrency"] <= video["concurrency"],
    )
    report.add(
        NAME,
        scen,
        "peak creates in a window",
        fam["peak_window_creates"],
        "",
        f"<= {video['requests']}",
        fam["peak_window_creates"] <= video["requests"],
    )
    report.details[name] = {
        "bound": bound,
        "client": result,
        "emulator": {k: seen[k] for k in ("gets", "lists", "polls", "rate_limited_total")}
        | {"video": fam, "callbacks_delivered": seen.get("callbacks_delivered")},
    }


def run(args: argparse.Namespace) -> Report:
    report = Report()
    chosen = args.scenario or ["concurrency", "rate", "callbacks"]
    conc = {"concurrency": args.concurrency, "requests": 100_000, "per_seconds": 1.0}
    if "concurrency" in chosen:
        scenario(report, "concurrency-bound", jobs=args.jobs_c, latency=args.latency, video=conc)
    if "rate" in chosen:
        rate = {"concurrency": 1000, "requests": args.requests, "per_seconds": args.per_seconds}
        scenario(report, "rate-bound", jobs=args.jobs_r, latency=args.latency, video=rate)
    if "callbacks" in chosen:
        scenario(
            report,
            "concurrency-bound + callbacks",
            jobs=args.jobs_c,
            latency=args.latency,
            video=conc,
            callbacks=True,
        )
    return report
