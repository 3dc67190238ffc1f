"""The ``lumasched`` command line. The only module that prints (with ``_progress``).

::

    lumasched run MANIFEST --out DIR [--emulator] [--dry-run] [--budget USD] ...
    lumasched status DIR
    lumasched get ID | list | delete ID... | download ID | concepts | camera-motions | credits
    lumasched emulator ...      (lumasched.emulator.main)
    lumasched limits ...        (lumasched.cli._limits.main)

Exit status: 0 every item completed; 1 some generations failed (or were not
run: budget reached); 2 usage or manifest error (nothing sent), the key rejected,
items changed since created, or the folder in use by another run (nothing sent
for the items concerned); 69 the API unreachable; 74 the journal or results
file cannot be written (disk full, read-only); 130 interrupted (Ctrl-C); 143
terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from lumasched._config import (
    API_KEY_HELP,
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_JOB_TIMEOUT,
    DEFAULT_MAX_ASSET_SIZE,
    ENV_API_KEY,
    ENV_BASE_URL,
    Settings,
)
from lumasched.api import Family
from lumasched.engine._reachability import DEFAULT_UNREACHABLE_GIVE_UP
from lumasched.errors import (
    APIStatusError,
    APIUnreachableError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    ItemsChangedError,
    JournalError,
    LumaError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)
from lumasched.limits import Limits

__all__ = [
    "EXIT_CLAIMS_WAIT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STORAGE",
    "EXIT_TERMINATED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "main",
    "parse_size",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
"""sysexits EX_UNAVAILABLE: the API could not be reached (nothing lost; rerun)."""
EXIT_STORAGE = 74
"""sysexits' EX_IOERR: the journal or results file cannot be written."""
EXIT_CLAIMS_WAIT = 75
"""sysexits EX_TEMPFAIL: with --redis, items wait because Redis lost its state and
a host that is gone may have made them; nothing was lost (docs/multihost.md)."""
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""128 + SIGTERM, as a shell reports a process SIGTERM ended."""

DEFAULT_EMULATOR_SPEED = 100.0
JOURNAL_NAME = "journal.sqlite"
RESULTS_NAME = "results.jsonl"

_DELEGATED = {
    "emulator": ("lumasched.emulator", "run the built-in Dream Machine API emulator"),
    "limits": ("lumasched.cli._limits", "show the live state of limits shared through Redis"),
    "claims": ("lumasched.cli._claims", "import other hosts' records into the claims in Redis"),
}

log = logging.getLogger("lumasched")


_json_stderr = False
"""``--log-format json``: stderr carries JSON lines only, so messages go through the log."""


def _out(text: str = "", *, file: TextIO | None = None) -> None:
    if _json_stderr and file is sys.stderr:
        log.error("%s", text, extra={"event": "cli.message"})
        return
    print(text, file=file or sys.stdout, flush=True)


class _QuietPipe:
    """stdout that goes quiet once its reader has gone (``lumasched run ... | head``):
    the run carries on (nothing paid for is dropped) and prints no traceback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
                self._stream.flush()
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.broken = True
        # The interpreter flushes stdout once more on exit: point the descriptor at
        # /dev/null so that flush has nowhere to fail.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _err(text: str) -> None:
    if _json_stderr:
        log.error("%s", text, extra={"event": "cli.error"})
        return
    print(f"lumasched: {text}", file=sys.stderr, flush=True)


# -- the parser ---------------------------------------------------------------


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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lumasched")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


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
    parser.add_argument("--version", action="version", version=f"lumasched {_version()}")
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

    for name, (_, text) in _DELEGATED.items():
        sub.add_parser(name, help=text + f" (see: lumasched {name} --help)", add_help=False)
    return parser


# -- entry point --------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _DELEGATED:
        import importlib

        name = _DELEGATED[args_list[0]][0]
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            _err(f"'{args_list[0]}' is not available in this installation")
            return EXIT_USAGE
        try:
            result: int = module.main(args_list[1:])
        except SystemExit as exc:  # their argparse (--help, usage errors)
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        return result
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(getattr(args, "verbose", False), getattr(args, "log_format", "human"))
    handler = _COMMANDS[args.command]
    stdout = sys.stdout
    sys.stdout = _QuietPipe(stdout)
    try:
        return handler(args)
    except StorageError as exc:
        _err(
            f"{exc}; nothing more was created: free the space (or fix the permissions) "
            "and run the same command again to resume"
        )
        return EXIT_STORAGE
    except ConfigurationError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except JournalError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except LumaError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    finally:
        sys.stdout = stdout


def _setup_logging(verbose: bool, log_format: str = "human") -> None:
    global _json_stderr
    from lumasched.observe import configure_logging

    _json_stderr = log_format == "json"
    # JSON lines carry every job state change (INFO); human lines stay quiet.
    quiet = logging.INFO if _json_stderr else logging.WARNING
    handler = configure_logging(
        "json" if _json_stderr else "human",
        level=logging.DEBUG if verbose else quiet,
        stream=sys.stderr,
        secrets=[_env_key()],
    )
    if not verbose:
        # ``run --emulator``: the in-process emulator's request lines are noise at INFO.
        handler.addFilter(
            lambda r: r.levelno >= logging.WARNING or not r.name.startswith("lumasched.emulator")
        )


def _env_key() -> str | None:
    """The key to scrub from log lines, if the environment holds one."""
    try:
        return Settings.from_env().api_key
    except ConfigurationError:
        return None


def _settings(args: argparse.Namespace, *, need_key: bool = True) -> Settings:
    settings = Settings.from_env(
        base_url=getattr(args, "base_url", None), redis_url=getattr(args, "redis", None)
    )
    if need_key and settings.api_key is None:
        raise ConfigurationError(f"no API key: {API_KEY_HELP}")
    return settings


def _with_client(args: argparse.Namespace, body: Callable[[Any], Awaitable[int]]) -> int:
    from lumasched.api import LumaClient

    settings = _settings(args)

    async def go() -> int:
        async with LumaClient(settings=settings) as client:
            return await body(client)

    return asyncio.run(go())


# -- simple API commands ------------------------------------------------------


def _cmd_get(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        generation = await client.get(args.id)
        _out(json.dumps(generation.to_json(), indent=2, ensure_ascii=False, default=str))
        return EXIT_OK

    return _with_client(args, body)


def _cmd_list(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        page = await client.list(limit=args.limit, offset=args.offset)
        if args.json:
            for generation in page.generations:
                _out(json.dumps(generation.to_json(), ensure_ascii=False, default=str))
            return EXIT_OK
        rows = [
            (
                g.id,
                str(g.state),
                str(g.generation_type or ""),
                str(g.model or ""),
                g.created_at.isoformat(timespec="seconds") if g.created_at else "",
                g.failure_reason or "",
            )
            for g in page.generations
        ]
        _table(("ID", "STATE", "TYPE", "MODEL", "CREATED", "FAILURE"), rows)
        if page.has_more:
            _out(f"(more: --offset {args.offset + len(rows)})")
        return EXIT_OK

    return _with_client(args, body)


def _cmd_delete(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        status = EXIT_OK
        for generation_id in args.ids:
            try:
                await client.delete(generation_id)
            except NotFoundError:
                _err(f"{generation_id}: no such generation")
                status = EXIT_FAILED
            else:
                _out(f"deleted {generation_id}")
        return status

    return _with_client(args, body)


def _cmd_download(args: argparse.Namespace) -> int:
    from lumasched.engine.downloads import download_asset

    into_dir = args.out.is_dir() or str(args.out).endswith(os.sep)

    async def body(client: Any) -> int:
        generation = await client.get(args.id)
        url = generation.asset_url
        if url is None:
            state = generation.state
            reason = f": {generation.failure_reason}" if generation.failure_reason else ""
            _err(f"{args.id} has no asset to download (state {state}{reason})")
            return EXIT_FAILED
        target: Path = args.out
        if into_dir:
            target = target / f"{generation.id}{_extension(url, generation)}"

        async def refresh() -> str:
            fresh = await client.get(args.id)
            return str(fresh.asset_url)

        result = await download_asset(client, url, target, refresh_url=refresh)
        _out(f"{result.path}  {result.bytes} bytes  sha256 {result.sha256}")
        return EXIT_OK

    return _with_client(args, body)


def _extension(url: str, generation: Any) -> str:
    from urllib.parse import urlsplit

    suffix = Path(urlsplit(url).path).suffix.lower()
    if suffix in (".mp4", ".jpg", ".jpeg", ".png", ".webp", ".mov"):
        return suffix
    assets = generation.assets
    return ".mp4" if assets is not None and assets.video else ".jpg"


def _cmd_concepts(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        for key in await client.concepts():
            _out(str(key))
        return EXIT_OK

    return _with_client(args, body)


def _cmd_camera_motions(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        for motion in await client.camera_motions():
            _out(str(motion))
        return EXIT_OK

    return _with_client(args, body)


def _cmd_credits(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        credits = await client.credits()
        cents = float(credits.credit_balance)
        _out(f"credit balance: {cents:g} cents (${cents / 100:,.2f})")
        return EXIT_OK

    return _with_client(args, body)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- status -------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    from lumasched.store._ownership import holder_of
    from lumasched.store.journal import Journal

    path: Path = args.journal or args.dir / JOURNAL_NAME
    if not path.is_file():
        _err(f"no journal at {path} (is {args.dir} the --out directory of a run?)")
        return EXIT_USAGE
    # A reader: no lock, so it works while a run holds the journal.
    with Journal(path, read_only=True) as journal:
        batch = journal.meta("claims_batch")
        if batch is None and journal.batch:
            from lumasched.claims import manifest_id

            batch = manifest_id(journal.batch)  # a run of lumasched 0.1.0
        counts = journal.counts()
        total = sum(counts.values())
        _out(f"journal {path}: {total} item{'s' if total != 1 else ''}")
        holder = holder_of(path)
        if holder is not None:
            _out(f"  in use by a run now: {holder}")
        order = ("completed", "failed", "cancelled", "submitted", "downloading", "creating")
        states = [*order, *sorted(set(counts) - set(order))]
        for state in states:
            if counts.get(state):
                _out(f"  {state:<12} {counts[state]}")
        failed = []
        unfinished = 0
        waiting: Counter[str] = Counter()
        for record in journal.records():
            if record.state == "failed":
                failed.append(record)
            elif not record.finished:
                unfinished += 1
                if record.state == "pending" and record.reason:
                    waiting[record.reason] += 1
            if args.verbose:
                where = record.path or ""
                gid = record.generation_id or "-"
                _out(f"  {record.key}  {record.state}  {gid}  {where}".rstrip())
        if failed:
            _out("failed:")
            for record in failed:
                _out(f"  {record.key}: {record.reason or 'no reason recorded'}")
            _out("(run again with --retry-failed to create the failed generations anew)")
        if unfinished:
            why = ", ".join(f"{n} {reason}" for reason, n in waiting.most_common())
            why = f" (pending: {why})" if why else ""
            _out(f"{unfinished} not finished{why}: run the same command again to resume them")
    settings = _settings(args, need_key=False)
    if settings.redis_url is not None and batch:
        _cluster_status(settings, batch, verbose=args.verbose)
    return EXIT_FAILED if failed else EXIT_OK


def _cluster_status(settings: Settings, batch: str, *, verbose: bool) -> None:
    """The manifest's record in Redis, as every host sees it (docs/multihost.md)."""
    from collections import Counter

    from lumasched.cli._multihost import cluster_view
    from lumasched.limits.redis import REDIS_DOWN

    try:
        view, recovery = asyncio.run(cluster_view(settings, batch))
    except REDIS_DOWN as exc:
        _err(f"could not read the record in Redis: {exc}")
        return
    if not view:
        _out(f"Redis: no record of batch {batch} for this API key")
        return
    states = Counter(claim.record.state for claim in view.values())
    summary = ", ".join(f"{n} {state}" for state, n in states.most_common())
    _out(f"Redis (all hosts), batch {batch}: {len(view)} items: {summary}")
    if recovery["lost"]:
        missing = [label for label, status in recovery["sites"].items() if status != "done"]
        _out(
            "  Redis lost the claim state; not re-seeded yet: "
            + (", ".join(sorted(missing)) or "none")
            + " (lumasched claims import resolves it)"
        )
    hosts = Counter(c.record.host for c in view.values() if c.record.state == "completed")
    for host, n in sorted(hosts.items(), key=lambda pair: str(pair[0])):
        _out(f"  completed on {host}: {n}")
    for _, claim in sorted(view.items()):
        record = claim.record
        key = record.item
        if verbose or (record.state not in ("completed", "failed") and claim.expires_in > 0):
            held = f"held by {record.owner} {claim.expires_in:.0f}s" if claim.expires_in else ""
            gid = record.generation_id or "-"
            _out(f"  {key}  {record.state}  {gid}  {record.path or ''}  {held}".rstrip())


# -- run ----------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from lumasched.manifest import Manifest, ManifestError

    if args.budget is not None and not (args.budget >= 0 and math.isfinite(args.budget)):
        raise ConfigurationError("--budget must be a non-negative number of US dollars")
    if args.emulator_speed <= 0:
        raise ConfigurationError("--emulator-speed must be > 0")
    if args.claim_ttl is not None and not args.claim_ttl > 0:
        raise ConfigurationError("--claim-ttl must be > 0")
    if not (args.unreachable_timeout >= 0 and math.isfinite(args.unreachable_timeout)):
        raise ConfigurationError("--unreachable-timeout must be a number of seconds >= 0")
    if not (args.job_timeout > 0 and math.isfinite(args.job_timeout)):
        raise ConfigurationError(f"--job-timeout {args.job_timeout:g}: must be > 0 seconds")
    max_asset_size = DEFAULT_MAX_ASSET_SIZE
    if args.max_asset_size is not None:
        try:
            max_asset_size = parse_size(args.max_asset_size)
        except ValueError as exc:
            raise ConfigurationError(f"--max-asset-size {exc}") from None
    if args.batch is not None and not args.batch.strip():
        raise ConfigurationError("--batch: the name must not be empty")
    if args.metrics_port is not None:
        from lumasched.cli._observe import check_metrics_available

        check_metrics_available(args.metrics_port)
    if not (args.metrics_linger >= 0 and math.isfinite(args.metrics_linger)):
        raise ConfigurationError("--metrics-linger must be a number of seconds >= 0")
    limits = Limits.from_toml(args.limits) if args.limits else Limits.tier(args.tier)
    prices = _prices(args.prices)
    settings = attrs.evolve(
        _settings(args, need_key=False),
        job_timeout=args.job_timeout,
        max_asset_size=max_asset_size,
    )
    if args.batch is not None and (settings.redis_url is None or args.emulator):
        raise ConfigurationError(
            "--batch NAME names a batch shared through Redis: give --redis URL "
            "(or LUMASCHED_REDIS_URL), without --emulator"
        )

    from lumasched.manifest._plan import Planner

    manifest = Manifest(args.manifest)
    planner = Planner(
        limits,
        prices=prices,
        latency_scale=1.0 / args.emulator_speed if args.emulator else 1.0,
    )
    try:
        summary = manifest.check(on_item=planner.add if args.dry_run else None)
    except ManifestError as exc:
        for problem in exc.problems:
            _out(str(problem), file=sys.stderr)
        count = len(exc.problems)
        _err(f"{count} problem{'s' if count != 1 else ''} in {args.manifest}; nothing was sent")
        return EXIT_USAGE
    from lumasched.cli._uploads import UploadOptions, need_target

    upload = None
    if args.upload is not None:
        upload = UploadOptions(args.upload, args.upload_endpoint, args.upload_public_base)
    elif args.upload_endpoint or args.upload_public_base:
        raise ConfigurationError("--upload-endpoint and --upload-public-base need --upload")
    need_target(manifest.input_files, upload, args.emulator)
    if args.dry_run:
        return _dry_run(args, planner, settings, limits, manifest, prices, upload)
    # After the manifest check, so a user sees every problem in the file first.
    if not args.emulator and settings.api_key is None:
        raise ConfigurationError(f"no API key: {API_KEY_HELP}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigurationError(f"--out {args.out}: not a directory")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"--out {args.out}: cannot create the directory: {exc.strerror or exc}"
        ) from exc

    from lumasched.cli import _progress, _runner

    totals: dict[Family, int] = {}
    for (family, _, _), count in summary.groups.items():
        totals[family] = totals.get(family, 0) + count
    display = _progress.make_display(
        live=not args.no_progress and sys.stdout.isatty(), limits=limits, totals=totals
    )
    options = _runner.RunOptions(
        manifest=manifest,
        out_dir=args.out,
        journal_path=args.journal or args.out / JOURNAL_NAME,
        results_path=args.out / RESULTS_NAME,
        limits=limits,
        settings=settings,
        emulator=args.emulator,
        emulator_speed=args.emulator_speed,
        callback_url=args.callback_url,
        budget_cents=None if args.budget is None else args.budget * 100.0,
        prices=prices,
        total=summary.count,
        claim_ttl=args.claim_ttl,
        batch_name=args.batch,
        reconcile_settle=args.reconcile_settle,
        redo_changed=args.redo_changed,
        retry_failed=args.retry_failed,
        unreachable_give_up=args.unreachable_timeout,
        metrics_port=args.metrics_port,
        metrics_linger=args.metrics_linger,
        log_json=args.log_format == "json",
        upload=upload,
        dashboard_port=args.dashboard,
        family_totals=totals,
    )
    try:
        outcome = asyncio.run(_runner.run_batch(options, display))
    except ItemsChangedError as exc:
        _report_changed(exc)
        return EXIT_USAGE
    display.summary(outcome)
    if outcome.storage_error is not None:
        raise StorageError(outcome.storage_error, path=str(args.out), what="run")
    if outcome.halted is not None:
        return _report_halt(outcome.halted, outcome.not_run_total)
    if outcome.signal == "SIGTERM":
        return EXIT_TERMINATED
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if outcome.claims_wait:
        return EXIT_CLAIMS_WAIT
    accounted = outcome.completed + len(outcome.failed) + outcome.not_run_total
    if accounted < outcome.total:
        # Never "all is well" for items nobody made: a bug, but not a silent one.
        _err(f"{outcome.total - accounted} item(s) neither made nor accounted for; run again")
        return EXIT_FAILED
    if outcome.failed or outcome.not_run_total:
        return EXIT_FAILED
    return EXIT_OK


def _report_changed(exc: ItemsChangedError) -> None:
    for problem in exc.problems:
        _out(str(problem), file=sys.stderr)
    count = len(exc.problems)
    cost = f" (estimated {_usd(exc.cost_cents)})" if exc.cost_cents else ""
    _err(
        f"{count} item{'s' if count != 1 else ''} changed since created; nothing was sent. "
        f"Rerun with --redo-changed to create {'them' if count != 1 else 'it'} anew{cost}, "
        "replacing the files (--dry-run --redo-changed shows the plan), "
        "or restore the manifest"
    )


def _rejected_key(exc: APIStatusError) -> str:
    return f"the API rejected the key (HTTP {exc.status}) — check {ENV_API_KEY}"


def _report_halt(error: LumaError, pending: int) -> int:
    """The message and exit status for a run that stopped creating: a rejected key
    (2) or an unreachable API (69). Its items stay pending for a rerun."""
    items = f"{pending} item{'s' if pending != 1 else ''}"
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        _err(_rejected_key(error))
        _err(f"{items} stay pending: run the same command again with the right key")
        return EXIT_USAGE
    if isinstance(error, APIUnreachableError):
        _err(str(error))
        _err(f"{items} stay pending: run the same command again once the API can be reached")
        return EXIT_UNAVAILABLE
    status = getattr(error, "status", None)
    if status == 402:
        advice = "the account cannot pay for more generations: add credits (or raise its cap)"
    elif status in (404, 405):
        advice = f"check --base-url / {ENV_BASE_URL}"
    else:
        advice = "it would refuse every create"
    _err(f"the API answered {error} to a create, which is not about the item: {advice}")
    _err(f"{items} stay pending: run the same command again once it is fixed")
    return EXIT_USAGE


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


def _prices(path: str | None) -> Any:
    from lumasched.pricing import PriceTable

    return PriceTable.from_file(path) if path else PriceTable()


def _dry_run(
    args: argparse.Namespace,
    planner: Any,
    settings: Settings,
    limits: Limits,
    manifest: Any,
    prices: Any,
    upload: Any = None,
) -> int:
    """Print the plan; the exit status says whether the run would go through: 2 the
    key rejected or items changed since created (without --redo-changed), 69 the
    API unreachable, 1 over --budget, else 0."""
    from lumasched.cli._progress import format_duration

    plan = planner.plan()
    _out(f"plan for {args.manifest}: {plan.items} item{'s' if plan.items != 1 else ''}")
    rows = [
        (
            group.family.value,
            group.kind,
            group.model or "-",
            str(group.items),
            _usd(group.cost_cents) + (f" (+{group.unpriced} unpriced)" if group.unpriced else ""),
        )
        for group in plan.groups
    ]
    _table(("FAMILY", "TYPE", "MODEL", "ITEMS", "EST. COST"), rows)
    _out()
    for family, seconds in sorted(plan.fastest_seconds.items()):
        fl = limits[family]
        _out(
            f"fastest possible ({family.value}): {format_duration(seconds)}  "
            f"[{fl.concurrency} at once, {fl.requests} creates per {fl.per_seconds:g}s]"
        )
    where = f"emulator at speed {args.emulator_speed:g}" if args.emulator else "the real service"
    if len(plan.fastest_seconds) > 1:
        _out(f"fastest possible overall: {format_duration(plan.fastest_total)}")
    _out(f"  (from the expected latencies of {where}; items that build on others wait for them)")
    unpriced = f", {plan.unpriced} item(s) not priced" if plan.unpriced else ""
    _out(f"estimated cost: {_usd(plan.cost_cents)}{unpriced}")
    statuses: list[int] = []
    to_spend = plan.cost_cents
    holder = _folder_holder(args)
    if holder is not None:
        _out(f"in use by another run now ({holder}): the run would be refused")
        statuses.append(EXIT_USAGE)
    review = _journal_review(args, manifest, prices)
    if review is not None:
        to_spend = review.create_cents
        statuses += _print_review(args, review)
    if args.budget is not None:
        over = to_spend > args.budget * 100
        verdict = "OVER" if over else "within"
        what = "this run's creates" if review is not None else "the plan"
        _out(f"budget: ${args.budget:,.2f} ({verdict} budget for {what}: {_usd(to_spend)})")
        if over:
            statuses.append(EXIT_FAILED)
    if settings.api_key is not None and not args.emulator:
        balance = _check_credits(settings)
        if isinstance(balance, float):
            enough = "enough" if balance >= to_spend else "NOT enough"
            _out(f"credit balance: {_usd(balance)} ({enough} for this batch)")
        elif isinstance(balance, AuthenticationError | PermissionDeniedError):
            _err(_rejected_key(balance))
            statuses.append(EXIT_USAGE)
        elif isinstance(balance, ConnectError):
            _err(f"cannot reach the API at {settings.base_url}: {balance}")
            statuses.append(EXIT_UNAVAILABLE)
        else:
            _err(f"could not read the credit balance: {balance}")
    elif not args.emulator:
        _out(f"credit balance: not checked (no key: {ENV_API_KEY} is not set)")
    if manifest.input_files:
        _print_uploads(args, manifest.input_files, upload)
    _out("dry run: nothing was sent")
    # The most telling status first: what the user must fix before the run can go.
    for status in (EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_FAILED):
        if status in statuses:
            return status
    return EXIT_OK


def _print_uploads(args: argparse.Namespace, files: list[Any], upload: Any) -> None:
    """The local files a run would upload, and those already stored (looked up only)."""
    from lumasched.cli._runner import EMULATOR_STATE_NAME
    from lumasched.cli._uploads import plan_uploads, size

    journal_dir = (args.journal or args.out / JOURNAL_NAME).parent
    state = journal_dir / EMULATOR_STATE_NAME if args.emulator else None
    plan = asyncio.run(plan_uploads(files, upload, journal_dir, state))
    where = "the emulator's store" if upload is None else plan.target
    _out(
        f"local inputs: {size(len(plan.to_upload), plan.upload_bytes)} to upload to {where}, "
        f"{size(len(plan.present), plan.present_bytes)} already there"
    )
    for file in plan.to_upload:
        _out(f"  upload {file.path} ({file.size:,} bytes)")


def _folder_holder(args: argparse.Namespace) -> Any:
    """The run holding the journal (or, with --journal elsewhere, the folder), if any."""
    from lumasched.store._ownership import FOLDER, holder_of

    journal: Path = args.journal or args.out / JOURNAL_NAME
    holder = holder_of(journal)
    if holder is None and args.journal is not None:
        holder = holder_of(args.out / FOLDER)
    return holder


def _journal_review(args: argparse.Namespace, manifest: Any, prices: Any) -> Any:
    """What the journal of an earlier run changes in the plan (None without one).
    Read only: works while a run holds the journal."""
    from lumasched.manifest._changes import review
    from lumasched.store.journal import Journal

    path: Path = args.journal or args.out / JOURNAL_NAME
    if not path.is_file():
        return None
    with Journal(path, read_only=True) as journal:
        if journal.batch is not None and journal.batch != manifest.path.name:
            raise JournalError(
                f"{path}: journal belongs to batch {journal.batch!r}, not "
                f"{manifest.path.name!r}; use another --journal path (or --out directory)"
            )
        return review(
            manifest,
            journal,
            redo_changed=args.redo_changed,
            retry_failed=args.retry_failed,
            prices=prices,
        )


def _print_review(args: argparse.Namespace, review: Any) -> list[int]:
    _out(
        f"journal: {review.completed} completed, {review.in_flight} in flight, "
        f"{review.failed} failed"
    )
    _out(f"this run would create {review.to_create} item(s): {_usd(review.create_cents)}")
    if review.freed:
        _out(f"  including {review.freed} that failed with nothing created (key, network, refusal)")
    retry = len(review.retryable)
    if retry and args.retry_failed:
        _out(
            f"  including {retry} whose generation failed (--retry-failed): "
            f"{_usd(review.retry_cents)}"
        )
    elif retry:
        _out(
            f"{retry} item(s) whose generation failed stay failed; --retry-failed creates "
            f"them again: {_usd(review.retry_cents)}"
        )
    changed = len(review.changed)
    if not changed:
        return []
    for problem in review.changed:
        _out(f"  {problem}")
    if args.redo_changed:
        _out(
            f"  including {changed} changed since created (--redo-changed): "
            f"{_usd(review.changed_cents)}"
        )
        return []
    _out(
        f"{changed} item(s) changed since created: the run would refuse; --redo-changed "
        f"creates them anew: {_usd(review.changed_cents)}"
    )
    return [EXIT_USAGE]


def _check_credits(settings: Settings) -> float | LumaError:
    """The credit balance, or the error that kept it from being read (bounded: the
    plan itself needs no network, and a dry run must not hang on a dead one)."""
    from lumasched.api import LumaClient, RetryPolicy

    async def go() -> float:
        retry = RetryPolicy(attempts=3, total_timeout=15.0)
        async with LumaClient(settings=settings, retry=retry) as client:
            return float((await client.credits()).credit_balance)

    try:
        return asyncio.run(go())
    except LumaError as exc:
        return exc


def _usd(cents: float) -> str:
    dollars = cents / 100
    # Sub-cent prices (a photon-flash-1 image) would otherwise read as $0.00.
    return f"${dollars:,.3f}" if 0 < dollars < 0.01 else f"${dollars:,.2f}"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port}: must be 0..65535")
    return port


def _cmd_gallery(args: argparse.Namespace) -> int:
    from lumasched.gallery import write_gallery

    folder: Path = args.dir
    if not folder.is_dir():
        _err(f"{folder}: not a directory")
        return EXIT_USAGE
    if args.journal is None and not (folder / JOURNAL_NAME).is_file():
        if not (folder / RESULTS_NAME).is_file():
            _err(f"{folder}: neither {JOURNAL_NAME} nor {RESULTS_NAME} there (not a run's --out)")
            return EXIT_USAGE
    elif args.journal is not None and not args.journal.is_file():
        _err(f"--journal {args.journal}: no such file")
        return EXIT_USAGE
    try:
        page = write_gallery(folder, journal_path=args.journal)
    except OSError as exc:
        raise StorageError(str(exc.strerror or exc), path=str(folder), what="gallery") from exc
    _out(f"gallery: {page}")
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "gallery": _cmd_gallery,
    "status": _cmd_status,
    "get": _cmd_get,
    "list": _cmd_list,
    "delete": _cmd_delete,
    "download": _cmd_download,
    "concepts": _cmd_concepts,
    "camera-motions": _cmd_camera_motions,
    "credits": _cmd_credits,
}
