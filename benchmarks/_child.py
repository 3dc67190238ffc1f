"""Run one measurement in a fresh interpreter: ``python -m benchmarks._child MOD:FUNC JSON``.

Prints the function's result (a JSON object) as the last line of stdout, with
``usage`` (wall and CPU seconds of the call in this process) and
``max_rss_mb`` (this process's peak RSS, imports included) added.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from benchmarks._common import measure, peak_rss_mb


def main(argv: list[str]) -> int:
    # Warnings from lumasched (a poll error, a task that raised) end up in the
    # error a failed measurement reports.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    target, raw = argv
    module_name, _, func_name = target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    kwargs: dict[str, Any] = json.loads(raw)
    with measure() as usage:
        result = func(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    out = dict(result or {})
    out["usage"] = asdict(usage)
    out["max_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


async def _await(awaitable: Any) -> Any:
    return await awaitable


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
