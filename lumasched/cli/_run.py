"""``lumasched run``: check the arguments and the manifest, then hand the run to
``_runner`` (or the plan to ``_dryrun``), and turn its outcome into an exit status."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from typing import Any

import attrs

from lumasched._config import API_KEY_HELP, DEFAULT_MAX_ASSET_SIZE, ENV_BASE_URL
from lumasched.api import Family
from lumasched.cli import _console
from lumasched.cli._console import err, out, rejected_key, usd
from lumasched.cli._exits import (
    EXIT_CLAIMS_WAIT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from lumasched.cli._parser import JOURNAL_NAME, RESULTS_NAME, parse_size
from lumasched.errors import (
    APIUnreachableError,
    AuthenticationError,
    ConfigurationError,
    ItemsChangedError,
    LumaError,
    PermissionDeniedError,
    StorageError,
)
from lumasched.limits import Limits


def cmd_run(args: argparse.Namespace) -> int:
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
        _console.settings_from(args, need_key=False),
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
            out(str(problem), file=sys.stderr)
        count = len(exc.problems)
        err(f"{count} problem{'s' if count != 1 else ''} in {args.manifest}; nothing was sent")
        return EXIT_USAGE
    from lumasched.cli._uploads import UploadOptions, need_target

    upload = None
    if args.upload is not None:
        upload = UploadOptions(args.upload, args.upload_endpoint, args.upload_public_base)
    elif args.upload_endpoint or args.upload_public_base:
        raise ConfigurationError("--upload-endpoint and --upload-public-base need --upload")
    need_target(manifest.input_files, upload, args.emulator)
    if args.dry_run:
        from lumasched.cli._dryrun import dry_run

        return dry_run(args, planner, settings, limits, manifest, prices, upload)
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
        err(f"{outcome.total - accounted} item(s) neither made nor accounted for; run again")
        return EXIT_FAILED
    if outcome.failed or outcome.not_run_total:
        return EXIT_FAILED
    return EXIT_OK


def _report_changed(exc: ItemsChangedError) -> None:
    for problem in exc.problems:
        out(str(problem), file=sys.stderr)
    count = len(exc.problems)
    cost = f" (estimated {usd(exc.cost_cents)})" if exc.cost_cents else ""
    err(
        f"{count} item{'s' if count != 1 else ''} changed since created; nothing was sent. "
        f"Rerun with --redo-changed to create {'them' if count != 1 else 'it'} anew{cost}, "
        "replacing the files (--dry-run --redo-changed shows the plan), "
        "or restore the manifest"
    )


def _report_halt(error: LumaError, pending: int) -> int:
    """The message and exit status for a run that stopped creating: a rejected key
    (2) or an unreachable API (69). Its items stay pending for a rerun."""
    items = f"{pending} item{'s' if pending != 1 else ''}"
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        err(rejected_key(error))
        err(f"{items} stay pending: run the same command again with the right key")
        return EXIT_USAGE
    if isinstance(error, APIUnreachableError):
        err(str(error))
        err(f"{items} stay pending: run the same command again once the API can be reached")
        return EXIT_UNAVAILABLE
    status = getattr(error, "status", None)
    if status == 402:
        advice = "the account cannot pay for more generations: add credits (or raise its cap)"
    elif status in (404, 405):
        advice = f"check --base-url / {ENV_BASE_URL}"
    else:
        advice = "it would refuse every create"
    err(f"the API answered {error} to a create, which is not about the item: {advice}")
    err(f"{items} stay pending: run the same command again once it is fixed")
    return EXIT_USAGE


def _prices(path: str | None) -> Any:
    from lumasched.pricing import PriceTable

    return PriceTable.from_file(path) if path else PriceTable()
