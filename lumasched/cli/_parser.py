"""The argument parser of ``lumasched`` and the option types it needs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from lumasched._config import (
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_JOB_TIMEOUT,
    DEFAULT_MAX_ASSET_SIZE,
    DEFAULT_UNREACHABLE_GIVE_UP,
    ENV_API_KEY,
)

DEFAULT_EMULATOR_SPEED = 100.0
JOURNAL_NAME = "journal.sqlite"
RESULTS_NAME = "results.jsonl"

DELEGATED = {
    "emulator": ("lumasched.emulator", "run the built-in Dream Machine API emulator"),
    "limits": ("lumasched.cli._limits", "show the live state of limits shared through Redis"),
    "claims": ("lumasched.cli._claims", "import other hosts' records into the claims in Redis"),
}


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $LUMAAI_BASE_URL or the official endpoint)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument(
        "--log-format",
        choices=("human", "json"),
        default="human",
        help="log lines on stderr: human (default) or json, one object per line with "
        "job state changes (stdout keeps the display and summary)",
    )


class _Version(argparse.Action):
    """``--version``, with the installed metadata read only when asked (reading it
    costs every command's start otherwise)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("lumasched")
        except PackageNotFoundError:  # run from a source tree that was never installed
            text = "unknown"
        print(f"lumasched {text}", flush=True)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumasched",
        description=(
            "Batch client and scheduler for the Luma Dream Machine API. "
            "The API key comes from $LUMAAI_API_KEY."
        ),
        epilog="Exit status: 0 all completed, 1 some failed, 2 usage or manifest error "
        "(or the key rejected), 69 API unreachable, 74 journal or results file cannot be "
        "written, 130 interrupted, 143 terminated.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run a manifest to files on disk",
        description=(
            "Validate MANIFEST (JSONL, CSV or YAML) completely, then create every item "
            "within the account's limits, download the results to DIR and write "
            "DIR/results.jsonl. Running the same command again resumes from the journal: "
            "finished items are skipped and nothing is created twice."
        ),
        epilog="Exit status: 0 all completed, 1 some failed or not run (budget), "
        "2 usage or manifest error, items changed since created, the folder in use by "
        "another run, or the key rejected (rerun with it fixed), 69 the API unreachable "
        "(rerun once it is), 74 the journal or results file cannot be written (disk full, "
        "read-only), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); a rerun resumes.",
    )
    run.add_argument("manifest", metavar="MANIFEST", help="a .jsonl, .csv or .yaml manifest")
    run.add_argument(
        "--out",
        "-o",
        metavar="DIR",
        required=True,
        type=Path,
        help="where the files, results.jsonl and the journal go (created if missing)",
    )
    run.add_argument(
        "--emulator",
        action="store_true",
        help="start the built-in emulator in-process and run against it (no key needed)",
    )
    run.add_argument(
        "--emulator-speed",
        metavar="X",
        type=float,
        default=DEFAULT_EMULATOR_SPEED,
        help="with --emulator: divide modelled latencies by X "
        f"(default {DEFAULT_EMULATOR_SPEED:g})",
    )
    run.add_argument(
        "--limits",
        metavar="FILE",
        help="account limits: a TOML file with [video] and [image] tables of "
        "concurrency, requests, per_seconds",
    )
    run.add_argument(
        "--tier", default="build", help="named limits tier when no --limits (default: build)"
    )
    run.add_argument(
        "--journal", metavar="PATH", type=Path, help=f"journal file (default: DIR/{JOURNAL_NAME})"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the plan (counts, fastest time, cost); send nothing",
    )
    run.add_argument(
        "--budget",
        metavar="USD",
        type=float,
        help="stop creating once the estimated spend would pass USD (the rest stays queued)",
    )
    run.add_argument(
        "--redo-changed",
        action="store_true",
        help="create anew (paid) the items whose request changed since their generation "
        "was created, replacing their files; without it such a run is refused",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="create anew (paid) the items whose generation failed in an earlier run",
    )
    run.add_argument(
        "--unreachable-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_UNREACHABLE_GIVE_UP,
        help="how long the API may stay unreachable before the run stops, the items "
        f"still pending (default {DEFAULT_UNREACHABLE_GIVE_UP:g})",
    )
    run.add_argument(
        "--upload",
        metavar="s3://BUCKET/PREFIX",
        help="where the manifest's local files are uploaded (once each, by sha256) for the "
        "API to fetch: any S3-compatible bucket, credentials from the standard AWS "
        "environment or profile (pip install 'lumasched[s3]'); with --emulator they go to "
        "the emulator's own store",
    )
    run.add_argument(
        "--upload-endpoint",
        metavar="URL",
        help="the S3 endpoint for R2, MinIO, GCS (https://storage.googleapis.com) and others",
    )
    run.add_argument(
        "--upload-public-base",
        metavar="URL",
        help="the bucket is public at URL: hand the API URL/KEY instead of presigned URLs "
        "(which last 7 days and are re-signed when a create needs it)",
    )
    run.add_argument("--prices", metavar="FILE", help="price table override (TOML or JSON)")
    run.add_argument("--callback-url", metavar="URL", help="callback_url for every create")
    run.add_argument(
        "--redis",
        metavar="URL",
        help="share the limits with other processes through Redis (default: $LUMASCHED_REDIS_URL); "
        "the same command on several hosts then works the manifest together",
    )
    run.add_argument(
        "--claim-ttl",
        metavar="SECONDS",
        type=float,
        help="with --redis: how long a stopped host's items and slots stay taken before "
        "another host takes them over (default 30)",
    )
    run.add_argument(
        "--job-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_JOB_TIMEOUT,
        help="fail an item whose generation has no terminal state this long after its "
        f"create (default {DEFAULT_JOB_TIMEOUT:g}); a rerun polls it again",
    )
    run.add_argument(
        "--max-asset-size",
        metavar="SIZE",
        default=None,
        help="refuse assets larger than SIZE (bytes, or 20MB, 4GiB, ...; "
        f"default {DEFAULT_MAX_ASSET_SIZE // 1024**3}GiB)",
    )
    run.add_argument(
        "--batch",
        metavar="NAME",
        help="with --redis: the batch's name across hosts (default: its content, so only "
        "the same manifest is shared); a named batch keeps its record across edits",
    )
    run.add_argument("--reconcile-settle", type=float, help=argparse.SUPPRESS)  # tests only
    run.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=int,
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the run "
        "lasts (needs lumasched[prometheus]; see docs/observability.md)",
    )
    run.add_argument(
        "--metrics-linger",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="with --metrics-port: keep serving the final numbers this long after the "
        "run ends, so a scraper sees them (default 0)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="plain timestamped log lines instead of the live display",
    )
    run.add_argument(
        "--dashboard",
        metavar="PORT",
        nargs="?",
        type=_port,
        const=DEFAULT_DASHBOARD_PORT,
        help="serve a live page of the run on http://127.0.0.1:PORT/ "
        f"(default port {DEFAULT_DASHBOARD_PORT}; 0 picks a free one)",
    )
    _api_options(run)

    gallery = sub.add_parser(
        "gallery",
        help="write DIR/index.html, the page of a run's results",
        description="Write (or bring up to date) DIR/index.html: every item of the run "
        "with its thumbnail or video, prompt, options, state and failure reason, chains "
        "side by side, and a report with plots. `lumasched run` writes it too; use this "
        "for a folder made by an older version or by several hosts' results merged. "
        "Reads only the folder; sends nothing.",
    )
    gallery.add_argument("dir", metavar="DIR", type=Path, help="the --out directory of a run")
    gallery.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        help=f"journal file to read (default: DIR/{JOURNAL_NAME}, if there is one)",
    )

    status = sub.add_parser(
        "status",
        help="what a run's journal holds",
        description="Summarise the journal of an output directory: states, failures, "
        "what a rerun would still do. Reads only; sends nothing.",
    )
    status.add_argument("dir", metavar="DIR", type=Path, help="the --out directory of a run")
    status.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        help=f"journal file to read (default: DIR/{JOURNAL_NAME})",
    )
    status.add_argument("-v", "--verbose", action="store_true", help="list every item")
    status.add_argument(
        "--redis",
        metavar="URL",
        help="also show the record all hosts share in Redis (default: $LUMASCHED_REDIS_URL)",
    )

    get = sub.add_parser(
        "get",
        help="show one generation (JSON)",
        description="Print one generation as JSON: state, failure reason, asset URLs, "
        f"the request. Needs ${ENV_API_KEY}.",
    )
    get.add_argument("id", metavar="ID", help="a generation id")
    _api_options(get)

    lst = sub.add_parser(
        "list",
        help="list generations, newest first",
        description="List one page of the account's generations (id, state, type, model, "
        f"created, failure reason). Needs ${ENV_API_KEY}.",
    )
    lst.add_argument("--limit", type=int, default=20, help="page size (default 20)")
    lst.add_argument("--offset", type=int, default=0, help="generations to skip first (default 0)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    _api_options(lst)

    delete = sub.add_parser(
        "delete",
        help="delete generations",
        description="Delete generations from the account. The API has no cancel, and "
        "whether deleting a running generation stops it is not documented. "
        f"Needs ${ENV_API_KEY}. Exit status 1 if any id was not found.",
    )
    delete.add_argument("ids", metavar="ID", nargs="+", help="generation ids")
    _api_options(delete)

    download = sub.add_parser(
        "download",
        help="download a completed generation's asset",
        description="Download a completed generation's video (or its image, for an image "
        "generation), resuming after a cut and checking its size; prints the path, size and "
        f"sha256. Needs ${ENV_API_KEY}.",
    )
    download.add_argument("id", metavar="ID", help="a generation id")
    download.add_argument(
        "--out",
        "-o",
        metavar="PATH",
        type=Path,
        default=Path("."),
        help="a file, or a directory to write ID.EXT into (default: the current directory)",
    )
    _api_options(download)

    for name, text in (
        ("concepts", "list the concept keys usable in video requests"),
        ("camera-motions", "list camera motions (legacy endpoint)"),
        ("credits", "show the account's credit balance"),
    ):
        description = f"{text[0].upper()}{text[1:]}. Needs ${ENV_API_KEY}."
        _api_options(sub.add_parser(name, help=text, description=description))

    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text + f" (see: lumasched {name} --help)", add_help=False)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port}: must be 0..65535")
    return port


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?\s*", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes in ``text``: plain bytes (``1048576``), or a number with a unit,
    decimal (``20MB`` = 20,000,000) or binary (``4GiB`` = 4 * 1024**3)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r}: not a size (use bytes, or a unit: 20MB, 4GiB)")
    number, unit, binary = match.groups()
    factor = (1024 if binary else 1000) ** _SIZE_POWERS[unit.lower()] if unit else 1
    size = int(float(number) * factor)
    if size < 1:
        raise ValueError(f"{text!r}: must be at least 1 byte")
    return size
