"""``lumasched run --dry-run``: the plan, what the journal of an earlier run
changes in it, the budget, the credit balance and the uploads; nothing is sent."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from lumasched._config import ENV_API_KEY, Settings
from lumasched.cli._console import err, out, rejected_key, table, usd
from lumasched.cli._exits import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from lumasched.cli._parser import JOURNAL_NAME
from lumasched.errors import (
    AuthenticationError,
    ConnectError,
    JournalError,
    LumaError,
    PermissionDeniedError,
)
from lumasched.limits import Limits


def dry_run(
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
    out(f"plan for {args.manifest}: {plan.items} item{'s' if plan.items != 1 else ''}")
    rows = [
        (
            group.family.value,
            group.kind,
            group.model or "-",
            str(group.items),
            usd(group.cost_cents) + (f" (+{group.unpriced} unpriced)" if group.unpriced else ""),
        )
        for group in plan.groups
    ]
    table(("FAMILY", "TYPE", "MODEL", "ITEMS", "EST. COST"), rows)
    out()
    for family, seconds in sorted(plan.fastest_seconds.items()):
        fl = limits[family]
        out(
            f"fastest possible ({family.value}): {format_duration(seconds)}  "
            f"[{fl.concurrency} at once, {fl.requests} creates per {fl.per_seconds:g}s]"
        )
    where = f"emulator at speed {args.emulator_speed:g}" if args.emulator else "the real service"
    if len(plan.fastest_seconds) > 1:
        out(f"fastest possible overall: {format_duration(plan.fastest_total)}")
    out(f"  (from the expected latencies of {where}; items that build on others wait for them)")
    unpriced = f", {plan.unpriced} item(s) not priced" if plan.unpriced else ""
    out(f"estimated cost: {usd(plan.cost_cents)}{unpriced}")
    statuses: list[int] = []
    to_spend = plan.cost_cents
    holder = _folder_holder(args)
    if holder is not None:
        out(f"in use by another run now ({holder}): the run would be refused")
        statuses.append(EXIT_USAGE)
    review = _journal_review(args, manifest, prices)
    if review is not None:
        to_spend = review.create_cents
        statuses += _print_review(args, review)
    if args.budget is not None:
        over = to_spend > args.budget * 100
        verdict = "OVER" if over else "within"
        what = "this run's creates" if review is not None else "the plan"
        out(f"budget: ${args.budget:,.2f} ({verdict} budget for {what}: {usd(to_spend)})")
        if over:
            statuses.append(EXIT_FAILED)
    if settings.api_key is not None and not args.emulator:
        balance = _check_credits(settings)
        if isinstance(balance, float):
            enough = "enough" if balance >= to_spend else "NOT enough"
            out(f"credit balance: {usd(balance)} ({enough} for this batch)")
        elif isinstance(balance, AuthenticationError | PermissionDeniedError):
            err(rejected_key(balance))
            statuses.append(EXIT_USAGE)
        elif isinstance(balance, ConnectError):
            err(f"cannot reach the API at {settings.base_url}: {balance}")
            statuses.append(EXIT_UNAVAILABLE)
        else:
            err(f"could not read the credit balance: {balance}")
    elif not args.emulator:
        out(f"credit balance: not checked (no key: {ENV_API_KEY} is not set)")
    if manifest.input_files:
        _print_uploads(args, manifest.input_files, upload)
    out("dry run: nothing was sent")
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
    out(
        f"local inputs: {size(len(plan.to_upload), plan.upload_bytes)} to upload to {where}, "
        f"{size(len(plan.present), plan.present_bytes)} already there"
    )
    for file in plan.to_upload:
        out(f"  upload {file.path} ({file.size:,} bytes)")


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
    out(
        f"journal: {review.completed} completed, {review.in_flight} in flight, "
        f"{review.failed} failed"
    )
    out(f"this run would create {review.to_create} item(s): {usd(review.create_cents)}")
    if review.freed:
        out(f"  including {review.freed} that failed with nothing created (key, network, refusal)")
    retry = len(review.retryable)
    if retry and args.retry_failed:
        out(
            f"  including {retry} whose generation failed (--retry-failed): "
            f"{usd(review.retry_cents)}"
        )
    elif retry:
        out(
            f"{retry} item(s) whose generation failed stay failed; --retry-failed creates "
            f"them again: {usd(review.retry_cents)}"
        )
    changed = len(review.changed)
    if not changed:
        return []
    for problem in review.changed:
        out(f"  {problem}")
    if args.redo_changed:
        out(
            f"  including {changed} changed since created (--redo-changed): "
            f"{usd(review.changed_cents)}"
        )
        return []
    out(
        f"{changed} item(s) changed since created: the run would refuse; --redo-changed "
        f"creates them anew: {usd(review.changed_cents)}"
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
