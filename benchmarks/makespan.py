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

The ``cli-concurrency`` and ``cli-rate`` scenarios run what a user runs: the
real ``lumasched run MANIFEST --out DIR`` command as a subprocess (downloads,
journal, ``results.jsonl`` and the gallery included), timed from the moment
it is spawned to the moment it has exited, so process start and exit count.
The emulator notes, on the same wall clock, when the first and the last
create arrived and when the last asset was fetched, which splits the
makespan into start-up, the creates, the last job and the exit. Each runs
``--cli-runs`` times against a fresh emulator; the median is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import REPO_ROOT, EmulatorProcess, Report, child_env, run_child
from benchmarks.bound import best_makespan, best_schedule
from benchmarks.manifest_gen import write_manifest

NAME = "makespan"

TINY = {
    "jobs_c": 12,
    "concurrency": 3,
    "latency": 0.2,
    "jobs_r": 6,
    "requests": 2,
    "per_seconds": 0.3,
    "cli_jobs_c": 6,
    "cli_jobs_r": 6,
    "cli_runs": 1,
}

SCENARIOS = ("concurrency", "rate", "callbacks", "cli-concurrency", "cli-rate")


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
        choices=SCENARIOS,
        help="run only these (default: all)",
    )
    parser.add_argument(
        "--window-margin",
        type=float,
        help="the client limiter's rate-window margin, seconds (default: its own)",
    )
    parser.add_argument("--cli-jobs-c", type=int, default=120, help="jobs, cli-concurrency")
    parser.add_argument("--cli-jobs-r", type=int, default=60, help="jobs, cli-rate")
    parser.add_argument(
        "--cli-rate-latency", type=float, default=0.3, help="L seconds per job, cli-rate"
    )
    parser.add_argument("--cli-runs", type=int, default=3, help="runs of each cli scenario")


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
    window_margin: float | None = None,
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
                    "window_margin": window_margin,
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


def run_cli(
    manifest: Path, out_dir: Path, base_url: str, limits: Path, timeout: float = 600.0
) -> tuple[float, float, str]:
    """Spawn ``lumasched run`` and wait for its exit: (spawned, exited) on the wall
    clock the emulator uses, and the tail of its output."""
    cmd = [sys.executable, "-m", "lumasched", "run", str(manifest), "--out", str(out_dir)]
    cmd += ["--base-url", base_url, "--limits", str(limits), "--no-progress"]
    env = child_env()
    spawned = time.time()
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"lumasched run exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return spawned, exited, (proc.stdout + proc.stderr)[-2000:]


def cli_scenario(
    report: Report,
    name: str,
    *,
    jobs: int,
    latency: float,
    video: dict[str, Any],
    runs: int,
) -> None:
    """The real command, spawn to exit, ``runs`` times (see the module docstring)."""
    best = best_schedule(
        [latency] * jobs,
        concurrency=video["concurrency"],
        requests=video["requests"],
        per_seconds=video["per_seconds"],
    )
    bound = best.makespan
    measured: list[dict[str, float]] = []
    rate_limited = 0
    peak_conc = peak_window = 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="lumasched-bench-") as tmp:
            limits_file = Path(tmp, "limits.toml")
            limits_file.write_text(limits_toml(video), encoding="utf-8")
            manifest = write_manifest(Path(tmp, "batch.jsonl"), jobs, kind="video")
            emulator_args = ["--limits", str(limits_file), "--fixed-latency", str(latency)]
            with EmulatorProcess(emulator_args) as emu:
                spawned, exited, _ = run_cli(manifest, Path(tmp, "out"), emu.base_url, limits_file)
                seen = emu.inspect()
        fam = seen["families"]["video"]
        if seen["downloads_completed"] != jobs:
            raise RuntimeError(f"{name}: {seen['downloads_completed']} of {jobs} files fetched")
        rate_limited += seen["rate_limited_total"]
        peak_conc = max(peak_conc, fam["peak_concurrency"])
        peak_window = max(peak_window, fam["peak_window_creates"])
        measured.append(
            {
                "makespan": exited - spawned,
                "start": seen["first_create_at"] - spawned,
                "last_create": seen["last_create_at"] - spawned,
                "last_download": seen["last_download_at"] - spawned,
                "exit": exited - seen["last_download_at"],
            }
        )
    scen = f"{name} ({jobs} jobs, C={video['concurrency']}, R={video['requests']}/"
    scen += f"{video['per_seconds']:g}s, L={latency:g}s, {runs} runs)"
    spans = sorted(m["makespan"] / bound for m in measured)
    ratio = statistics.median(spans)
    mid = min(measured, key=lambda m: abs(m["makespan"] / bound - ratio))
    report.add(NAME, scen, "makespan, spawn to exit", mid["makespan"], "s", f"bound {bound:.2f} s")
    report.add(
        NAME,
        scen,
        "makespan / bound",
        ratio,
        "",
        "<= 1.03",
        ratio <= 1.03,
        note=f"runs {', '.join(f'{x:.3f}' for x in spans)}",
    )
    last_bound = best.creates[-1]
    # The view, from the server's side: the first create to the exit.
    served = statistics.median((m["makespan"] - m["start"]) / bound for m in measured)
    report.add(NAME, scen, "first create to exit / bound", served, "", "<= 1.03", served <= 1.03)
    report.add(NAME, scen, "spawn to first create", mid["start"], "s")
    report.add(
        NAME, scen, "last create, after spawn", mid["last_create"], "s", f"bound {last_bound:.2f}"
    )
    report.add(NAME, scen, "last asset fetched to exit", mid["exit"], "s")
    report.add(NAME, scen, "429s", rate_limited, "", "0", rate_limited == 0)
    report.add(
        NAME,
        scen,
        "peak concurrency / creates in a window",
        max(peak_conc, peak_window),
        "",
        f"<= {max(video['concurrency'], video['requests'])}",
        peak_conc <= video["concurrency"] and peak_window <= video["requests"],
    )
    report.details[name] = {"bound": bound, "last_create_bound": last_bound, "runs": measured}


def run(args: argparse.Namespace) -> Report:
    report = Report()
    chosen = args.scenario or list(SCENARIOS)
    conc = {"concurrency": args.concurrency, "requests": 100_000, "per_seconds": 1.0}
    rate = {"concurrency": 1000, "requests": args.requests, "per_seconds": args.per_seconds}
    library = {
        "concurrency": ("concurrency-bound", args.jobs_c, conc, False),
        "rate": ("rate-bound", args.jobs_r, rate, False),
        "callbacks": ("concurrency-bound + callbacks", args.jobs_c, conc, True),
    }
    for key, (name, jobs, video, callbacks) in library.items():
        if key in chosen:
            scenario(
                report,
                name,
                jobs=jobs,
                latency=args.latency,
                video=video,
                callbacks=callbacks,
                window_margin=args.window_margin,
            )
    cli = {
        "cli-concurrency": ("cli, concurrency-bound", args.cli_jobs_c, args.latency, conc),
        "cli-rate": ("cli, rate-bound", args.cli_jobs_r, args.cli_rate_latency, rate),
    }
    for key, (name, jobs, latency, video) in cli.items():
        if key in chosen:
            cli_scenario(report, name, jobs=jobs, latency=latency, video=video, runs=args.cli_runs)
    return report
