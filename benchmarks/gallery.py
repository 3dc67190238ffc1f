"""The gallery of a large run: time to write DIR/index.html the first time
(thumbnails and posters made) and again (kept), and the page's weight.

A folder of ``--items`` results is made up front (three images for each video:
1024x576 JPEGs and one of the emulator's H.264 clips), with ``results.jsonl``
lines as a run writes them; the page is then written twice in this process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

from benchmarks._common import Report

NAME = "gallery"

TINY = {"items": 40}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=2_000)


def _folder(out: Path, items: int) -> None:
    from PIL import Image

    clip = resources.files("lumasched.emulator").joinpath("assets", "video_160x90.mp4")
    video = clip.read_bytes()
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with (out / "results.jsonl").open("w", encoding="utf-8") as results:
        for n in range(items):
            key = f"item-{n:05d}"
            if n % 4 == 3:
                path = out / f"{key}.mp4"
                path.write_bytes(video)
            else:
                path = out / f"{key}.jpg"
                Image.new("RGB", (1024, 576), (n % 256, 80, 160)).save(path, quality=85)
            stamp = (at + dt.timedelta(seconds=n / 10)).isoformat()
            line = {
                "id": key,
                "state": "completed" if n % 50 else "failed",
                "generation_id": f"gen-{n}",
                "path": str(path),
                "bytes": path.stat().st_size,
                "failure_reason": None if n % 50 else "Job failed",
                "timings": {"queued": stamp, "created": stamp, "completed": stamp},
            }
            results.write(json.dumps(line) + "\n")


def run(args: argparse.Namespace) -> Report:
    from lumasched.gallery import write_gallery
    from lumasched.gallery._thumbs import Thumbnailer

    report = Report()
    scen = f"{args.items:,} items (3 images : 1 video)"
    with tempfile.TemporaryDirectory(prefix="lumasched-gallery-") as tmp:
        out = Path(tmp)
        _folder(out, args.items)
        started = time.perf_counter()
        page = write_gallery(out)
        first = time.perf_counter() - started
        started = time.perf_counter()
        write_gallery(out)
        again = time.perf_counter() - started
        size = page.stat().st_size
        thumbs = sum(p.stat().st_size for p in (out / ".gallery").iterdir())
        posters = Thumbnailer(out).posters_available
        shutil.rmtree(out / ".gallery")
    per_1000 = again / args.items * 1000
    report.add(NAME, scen, "first page (thumbnails made)", first, "s")
    report.add(NAME, scen, "page again (thumbnails kept)", again, "s")
    report.add(NAME, scen, "page again per 1,000 items", per_1000, "s", "< 1", per_1000 < 1)
    report.add(
        NAME,
        scen,
        "page size per item",
        size / args.items / 1e3,
        "kB",
        "< 3",
        size / args.items < 3e3,
    )
    report.add(NAME, scen, "thumbnails per item", thumbs / args.items / 1e3, "kB")
    report.details.update({"posters": posters, "page_bytes": size})
    return report
