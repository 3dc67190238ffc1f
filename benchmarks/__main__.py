"""The benchmark runner: ``python -m benchmarks [--json PATH] [--tiny] NAME [options]``.

``NAME`` is one benchmark (see ``--help``) or ``all``. Prints a table of the
measured figures against their goals and writes every figure, with the raw
details, to a JSON file (``benchmarks/results/`` unless ``--json`` says where).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks._common import RESULTS_DIR, Report, Row, fmt, git_commit

BENCHMARKS = {
    "makespan": "benchmarks.makespan",
    "client_cost": "benchmarks.client_cost",
    "memory": "benchmarks.memory",
    "scale": "benchmarks.scale",
    "redis": "benchmarks.redis_scale",
    "gallery": "benchmarks.gallery",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, help="write results here (default: results/)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes (seconds; what the smoke test runs)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    sub.add_parser("all", help="every benchmark at its default sizes")
    for name in BENCHMARKS:
        module = load(name)
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def namespace_for(name: str, argv: list[str], tiny: bool) -> argparse.Namespace:
    """Parse one benchmark's options, starting from its tiny preset when asked."""
    p = argparse.ArgumentParser(prog=name)
    module = load(name)
    module.add_arguments(p)
    if tiny:
        p.set_defaults(**module.TINY)
    return p.parse_args(argv)


def run(names: list[str], argvs: dict[str, list[str]], tiny: bool) -> list[tuple[str, Report]]:
    reports = []
    for name in names:
        args = namespace_for(name, argvs.get(name, []), tiny)
        print(f"running {name} ...", file=sys.stderr, flush=True)
        reports.append((name, load(name).run(args)))
    return reports


def table(rows: list[Row], *, markdown: bool = False) -> str:
    header = ["benchmark", "scenario", "metric", "value", "unit", "goal", "ok"]
    body = [
        [
            r.benchmark,
            r.scenario,
            r.metric,
            fmt(r.value),
            r.unit,
            r.goal,
            "" if r.ok is None else ("yes" if r.ok else "NO"),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    fmt_line = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt_line.format(*header), fmt_line.format(*("-" * w for w in widths))]
    lines += [fmt_line.format(*cells) for cells in body]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.benchmark == "all":
        names = list(BENCHMARKS)
        argvs: dict[str, list[str]] = {}
    else:
        names = [args.benchmark]
        argvs = {args.benchmark: argv[argv.index(args.benchmark) + 1 :]}
    started = dt.datetime.now(dt.UTC)
    reports = run(names, argvs, args.tiny)
    rows = [row for _, report in reports for row in report.rows]
    document = {
        "date": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "tiny": args.tiny,
        "machine": machine(),
        "rows": [row.to_json() for row in rows],
        "details": {name: report.details for name, report in reports},
    }
    path = args.json or RESULTS_DIR / f"{args.benchmark}-{started:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print(
        f"{document['date']}  commit {document['commit']}  "
        f"{document['machine']['cpus']} CPUs  load {document['machine']['load_avg'][0]:.2f}"
    )
    print(table(rows, markdown=args.markdown))
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
