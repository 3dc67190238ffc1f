"""Client cost per job: CPU seconds and wall time, lumasched against the official SDK.

At each size of ``--jobs`` (1,000 and 10,000 by default), zero-latency image
jobs (``--fixed-latency 0``) with the limits out of the way, each downloaded to
disk. Each contender runs in a fresh process against its own emulator (in
another process, so only the client's CPU is counted): lumasched's Scheduler
with its SQLite journal and streamed downloads, the same without the journal,
and the baseline in ``benchmarks/baseline.py`` (AsyncLumaAI, a semaphore, poll
every ``--poll-interval`` s with ``generations.get``, httpx streaming
download). All run at the same concurrency. Ratios are from the same run; with
``--runs N`` the contenders take N interleaved rounds, and each figure (and
each ratio) is the median. The goal is lumasched's CPU per job at most half
the baseline's (0.5), with the journal and without it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import EmulatorProcess, Report, run_child

NAME = "client_cost"

TINY = {"jobs": [40], "runs": 1}

CONTENDERS = ("lumasched", "lumasched, no journal", "baseline")
GOAL = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=[1_000, 10_000], help="one run per size"
    )
    parser.add_argument("--concurrency", type=int, default=100, help="both contenders")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the baseline's")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="rounds of the three contenders, interleaved; figures are medians",
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=("journal", "no-journal", "baseline"),
        default=["journal", "no-journal", "baseline"],
        help="which to run (a 100,000-job scale point without the 8-minute baseline); "
        "ratios need the baseline",
    )


_CHOICES = {"journal": "lumasched", "no-journal": "lumasched, no journal", "baseline": "baseline"}


def emulator_args(tmp: str) -> list[str]:
    limits = Path(tmp, "limits.toml")
    limits.write_text(
        "[video]\nconcurrency = 100000\nrequests = 1000000\nper_seconds = 1.0\n"
        "[image]\nconcurrency = 100000\nrequests = 1000000\nper_seconds = 1.0\n",
        encoding="utf-8",
    )
    return ["--limits", str(limits), "--fixed-latency", "0"]


def contender(name: str, jobs: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="lumasched-cost-") as tmp,
        EmulatorProcess(emulator_args(tmp)) as emu,
    ):
        out_dir = str(Path(tmp, "out"))
        if name == "baseline":
            result = run_child(
                "benchmarks.baseline:run_baseline",
                {
                    "base_url": emu.base_url,
                    "api_key": emu.api_key,
                    "jobs": jobs,
                    "out_dir": out_dir,
                    "kind": "image",
                    "concurrency": args.concurrency,
                    "poll_interval": args.poll_interval,
                },
            )
        else:
            result = run_child(
                "benchmarks._engine:run_batch",
                {
                    "base_url": emu.base_url,
                    "api_key": emu.api_key,
                    "jobs": jobs,
                    "kind": "image",
                    "limits": {
                        "image": {
                            "concurrency": args.concurrency,
                            "requests": 1_000_000,
                            "per_seconds": 1.0,
                        }
                    },
                    "out_dir": out_dir,
                    "journal": None if "no journal" in name else str(Path(tmp, "journal.db")),
                },
            )
        seen = emu.inspect()
    result["emulator"] = {
        k: seen[k] for k in ("creates_total", "gets", "lists", "downloads_completed")
    }
    return result


def run(args: argparse.Namespace) -> Report:
    report = Report()
    for jobs in args.jobs:
        # Interleaved rounds: a change in the shared machine's load hits every
        # contender alike, and the median of each is less at its mercy.
        chosen = [name for name in CONTENDERS if name in {_CHOICES[c] for c in args.contenders}]
        rounds = [
            {name: contender(name, jobs, args) for name in chosen} for _ in range(max(1, args.runs))
        ]
        _report_size(report, jobs, args.concurrency, rounds)
        report.details[f"{jobs} jobs"] = rounds
    return report


def _report_size(
    report: Report, jobs: int, concurrency: int, rounds: list[dict[str, dict[str, Any]]]
) -> None:
    ran = [name for name in CONTENDERS if name in rounds[0]]
    cpu: dict[str, list[float]] = {name: [] for name in ran}
    wall: dict[str, list[float]] = {name: [] for name in ran}
    for results in rounds:
        for name, result in results.items():
            cpu[name].append(result["usage"]["cpu"] / jobs * 1e3)
            wall[name].append(result["usage"]["wall"] / jobs * 1e3)
    runs = f", median of {len(rounds)} runs" if len(rounds) > 1 else ""
    for name in ran:
        scen = f"{name} ({jobs:,} jobs, C={concurrency}, L=0{runs})"
        report.add(NAME, scen, "client CPU per job", statistics.median(cpu[name]), "ms")
        report.add(NAME, scen, "wall per job", statistics.median(wall[name]), "ms")
        done = min(r[name]["emulator"]["downloads_completed"] for r in rounds)
        report.add(NAME, scen, "files downloaded", done, "", f"{jobs}", done == jobs)
        rss = statistics.median(r[name]["max_rss_mb"] for r in rounds)
        report.add(NAME, scen, "peak RSS", rss, "MB")
    for name in ran if "baseline" in ran else ():
        if name == "baseline":
            continue
        per_run = [mine / base for mine, base in zip(cpu[name], cpu["baseline"], strict=True)]
        cpu_ratio = statistics.median(per_run)
        wall_ratio = statistics.median(
            mine / base for mine, base in zip(wall[name], wall["baseline"], strict=True)
        )
        scen = f"{name} / baseline ({jobs:,} jobs, same runs{runs})"
        report.add(
            NAME,
            scen,
            "CPU per job ratio",
            cpu_ratio,
            "",
            f"<= {GOAL}",
            cpu_ratio <= GOAL,
            note="runs " + ", ".join(f"{x:.3f}" for x in per_run),
        )
        report.add(NAME, scen, "wall per job ratio", wall_ratio, "", "< 1", wall_ratio < 1)
