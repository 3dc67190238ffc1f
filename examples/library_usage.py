"""lumasched as a library: check a manifest, run it through the scheduler, read results.

Runs offline against the built-in emulator::

    python examples/library_usage.py

Point it at the real API by removing the emulator and setting ``LUMAAI_API_KEY``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from lumasched.api import LumaClient
from lumasched.emulator import Emulator
from lumasched.engine.scheduler import Scheduler
from lumasched.errors import LumaError
from lumasched.limits import Limits, make_limiter
from lumasched.manifest import Manifest, ManifestError
from lumasched.store.journal import Journal

HERE = Path(__file__).resolve().parent


async def main() -> int:
    manifest = Manifest(HERE / "chained.jsonl")
    try:
        summary = manifest.check()  # every problem at once, FILE:LINE: field: message
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{summary.count} items, {summary.dependent} built on other items")

    out = Path(tempfile.mkdtemp(prefix="lumasched-example-"))
    limits = Limits()  # the Build tier; Limits.from_toml("limits.toml") for another
    async with (
        Emulator(speed=200, limits=limits) as emulator,
        LumaClient(api_key="example", base_url=emulator.base_url) as client,
        make_limiter(limits) as limiter,
    ):
        with Journal(out / "journal.sqlite") as journal:
            async with Scheduler(
                client, limiter=limiter, journal=journal, out_dir=out
            ) as scheduler:
                # (key, request) pairs; a reference to another item becomes the
                # scheduler's placeholder, so the extend waits for its source.
                items = (
                    (item.id, item.resolve(Scheduler.ref)) for item in manifest.submission_order()
                )
                async for job in scheduler.as_completed(items):
                    try:
                        result = await job
                    except LumaError as exc:
                        print(f"{job.key}: failed: {exc}")
                    else:
                        print(f"{job.key}: {result.path} ({result.bytes} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
