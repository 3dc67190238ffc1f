"""Memory: peak RSS of ``lumasched run`` with a huge manifest and with huge assets.

Both runs use the real command (``python -m lumasched run MANIFEST --out DIR
--base-url URL``) in a child process against an emulator in another process;
peak RSS is the child's ``ru_maxrss`` from ``wait4``, so it covers the whole
life of the command.

* **Manifest**: 100,000 items (``benchmarks.manifest_gen``, streamed to a
  file) against 1,000, each with a 1 s latency under C=10, stopped with Ctrl-C
  (SIGINT) after ``--run-seconds``: almost every item is still queued. Flat
  means the 100k run costs little more than the 1k run.
* **Assets**: 2 videos padded to ``--big-mb`` MB each against 2 of about 50 kB,
  downloaded to disk. Flat means the peak does not grow with the asset size.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO_ROOT,
    EmulatorProcess,
    Report,
    child_env,
    wait4_rss_mb,
)
from benchmarks.manifest_gen import write_manifest

NAME = "memory"

TINY = {"items": [200, 2_000], "run_seconds": 3.0, "big_mb": 5.0}

SMALL_VIDEO_PADDING = 46_000
"""The emulator's clips are about 4 kB: padded to about 50 kB."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, nargs=2, default=[1_000, 100_000], metavar="N")
    parser.add_argument("--run-seconds", type=float, default=20.0)
    parser.add_argument("--big-mb", type=float, default=150.0)
    parser.add_argument("--part", choices=["manifest", "assets"], action="append")


def limits_file(tmp: str) -> Path:
    path = Path(tmp, "limits.toml")
    path.write_text(
        "[video]\nconcurrency = 10\nrequests = 1000\nper_seconds = 1.0\n"
        "[image]\nconcurrency = 10\nrequests = 1000\nper_seconds = 1.0\n",
        encoding="utf-8",
    )
    return path


def run_cli(
    manifest: Path,
    out_dir: Path,
    base_url: str,
    limits: Path,
    *,
    stop_after: float | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run ``lumasched run`` to the end (or SIGINT it after ``stop_after`` s)."""
    cmd = [
        sys.executable,
        "-m",
        "lumasched",
        "run",
        str(manifest),
        "--out",
        str(out_dir),
        "--base-url",
        base_url,
        "--limits",
        str(limits),
        "--no-progress",
    ]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT
        )
        deadline = started + (stop_after if stop_after is not None else timeout)
        # Never poll() here: it would reap the child before wait4 reads its rusage.
        while _alive(proc.pid) and time.perf_counter() < deadline:
            time.sleep(0.1)
        interrupted = False
        if _alive(proc.pid):
            interrupted = True
            proc.send_signal(signal.SIGINT)
            grace = time.perf_counter() + 30
            while _alive(proc.pid) and time.perf_counter() < grace:
                time.sleep(0.1)
            if _alive(proc.pid):
                proc.send_signal(signal.SIGINT)
        status, rss = wait4_rss_mb(proc)
        log.seek(0)
        tail = log.read()[-2000:].decode(errors="replace")
    results = out_dir / "results.jsonl"
    done = 0
    if results.exists():
        with results.open(encoding="utf-8") as fh:
            done = sum(1 for line in fh if json.loads(line).get("state") == "completed")
    return {
        "exit": status,
        "interrupted": interrupted,
        "peak_rss_mb": rss,
        "wall": time.perf_counter() - started,
        "completed": done,
        "bytes": sum(p.stat().st_size for p in out_dir.glob("*.mp4")),
        "log_tail": tail,
    }


def _alive(pid: int) -> bool:
    """True while ``pid`` has not exited (a zombie counts as exited; not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def manifest_part(report: Report, args: argparse.Namespace) -> None:
    figures = {}
    for items in args.items:
        with tempfile.TemporaryDirectory(prefix="lumasched-mem-") as tmp:
            manifest = write_manifest(Path(tmp, "manifest.jsonl"), items, kind="image")
            emu_args = ["--limits", str(limits_file(tmp)), "--fixed-latency", "1.0"]
            with EmulatorProcess(emu_args) as emu:
                result = run_cli(
                    manifest,
                    Path(tmp, "out"),
                    emu.base_url,
                    limits_file(tmp),
                    stop_after=args.run_seconds,
                )
        figures[items] = result
        scen = f"manifest of {items:,} items (stopped after {args.run_seconds:g} s)"
        report.add(NAME, scen, "peak RSS", result["peak_rss_mb"], "MB")
        report.add(NAME, scen, "items completed before stop", result["completed"], "")
        report.details[f"manifest_{items}"] = result
    small, big = (figures[n]["peak_rss_mb"] for n in args.items)
    growth = big - small
    per_item = growth * 1024 * 1024 / (args.items[1] - args.items[0])
    report.add(
        NAME,
        f"{args.items[1]:,} vs {args.items[0]:,} items",
        "peak RSS growth",
        growth,
        "MB",
        "flat",
        note=f"{per_item:.0f} bytes per extra queued item",
    )


def assets_part(report: Report, args: argparse.Namespace) -> None:
    figures = {}
    for label, padding in (("small", SMALL_VIDEO_PADDING), ("big", int(args.big_mb * 1024 * 1024))):
        with tempfile.TemporaryDirectory(prefix="lumasched-mem-") as tmp:
            manifest = write_manifest(Path(tmp, "manifest.jsonl"), 2, kind="video")
            emu_args = [
                "--limits",
                str(limits_file(tmp)),
                "--fixed-latency",
                "0.2",
                "--video-padding",
                str(padding),
            ]
            with EmulatorProcess(emu_args) as emu:
                result = run_cli(manifest, Path(tmp, "out"), emu.base_url, limits_file(tmp))
        figures[label] = result
        size = result["bytes"] / 2
        scen = f"2 assets of {_size(size)}"
        report.add(NAME, scen, "peak RSS", result["peak_rss_mb"], "MB")
        report.add(
            NAME, scen, "files completed", result["completed"], "", "2", result["completed"] == 2
        )
        report.details[f"assets_{label}"] = result
    growth = figures["big"]["peak_rss_mb"] - figures["small"]["peak_rss_mb"]
    report.add(
        NAME,
        "big vs small assets",
        "peak RSS growth",
        growth,
        "MB",
        "flat (< 10 MB)",
        growth < 10,
        note=f"assets {figures['big']['bytes'] / max(1, figures['small']['bytes']):.0f}x larger",
    )


def _size(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} kB"


def run(args: argparse.Namespace) -> Report:
    report = Report()
    parts = args.part or ["manifest", "assets"]
    if "manifest" in parts:
        manifest_part(report, args)
    if "assets" in parts:
        assets_part(report, args)
    return report
