"""The commands that read a run's folder and send nothing: ``status`` (the
journal, and the record all hosts share in Redis) and ``gallery`` (DIR/index.html)."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path

from lumasched._config import Settings
from lumasched.cli import _console
from lumasched.cli._console import err, out
from lumasched.cli._exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lumasched.cli._parser import JOURNAL_NAME, RESULTS_NAME
from lumasched.errors import StorageError


def cmd_status(args: argparse.Namespace) -> int:
    from lumasched.store._ownership import holder_of
    from lumasched.store.journal import Journal

    path: Path = args.journal or args.dir / JOURNAL_NAME
    if not path.is_file():
        err(f"no journal at {path} (is {args.dir} the --out directory of a run?)")
        return EXIT_USAGE
    # A reader: no lock, so it works while a run holds the journal.
    with Journal(path, read_only=True) as journal:
        batch = journal.meta("claims_batch")
        if batch is None and journal.batch:
            from lumasched.claims import manifest_id

            batch = manifest_id(journal.batch)  # a run of lumasched 0.1.0
        counts = journal.counts()
        total = sum(counts.values())
        out(f"journal {path}: {total} item{'s' if total != 1 else ''}")
        holder = holder_of(path)
        if holder is not None:
            out(f"  in use by a run now: {holder}")
        order = ("completed", "failed", "cancelled", "submitted", "downloading", "creating")
        states = [*order, *sorted(set(counts) - set(order))]
        for state in states:
            if counts.get(state):
                out(f"  {state:<12} {counts[state]}")
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
                out(f"  {record.key}  {record.state}  {gid}  {where}".rstrip())
        if failed:
            out("failed:")
            for record in failed:
                out(f"  {record.key}: {record.reason or 'no reason recorded'}")
            out("(run again with --retry-failed to create the failed generations anew)")
        if unfinished:
            why = ", ".join(f"{n} {reason}" for reason, n in waiting.most_common())
            why = f" (pending: {why})" if why else ""
            out(f"{unfinished} not finished{why}: run the same command again to resume them")
    settings = _console.settings_from(args, need_key=False)
    if settings.redis_url is not None and batch:
        _cluster_status(settings, batch, verbose=args.verbose)
    return EXIT_FAILED if failed else EXIT_OK


def _cluster_status(settings: Settings, batch: str, *, verbose: bool) -> None:
    """The manifest's record in Redis, as every host sees it (docs/multihost.md)."""
    from lumasched.cli._multihost import cluster_view
    from lumasched.limits.redis import REDIS_DOWN

    try:
        view, recovery = asyncio.run(cluster_view(settings, batch))
    except REDIS_DOWN as exc:
        err(f"could not read the record in Redis: {exc}")
        return
    if not view:
        out(f"Redis: no record of batch {batch} for this API key")
        return
    states = Counter(claim.record.state for claim in view.values())
    summary = ", ".join(f"{n} {state}" for state, n in states.most_common())
    out(f"Redis (all hosts), batch {batch}: {len(view)} items: {summary}")
    if recovery["lost"]:
        missing = [label for label, status in recovery["sites"].items() if status != "done"]
        out(
            "  Redis lost the claim state; not re-seeded yet: "
            + (", ".join(sorted(missing)) or "none")
            + " (lumasched claims import resolves it)"
        )
    hosts = Counter(c.record.host for c in view.values() if c.record.state == "completed")
    for host, n in sorted(hosts.items(), key=lambda pair: str(pair[0])):
        out(f"  completed on {host}: {n}")
    for _, claim in sorted(view.items()):
        record = claim.record
        key = record.item
        if verbose or (record.state not in ("completed", "failed") and claim.expires_in > 0):
            held = f"held by {record.owner} {claim.expires_in:.0f}s" if claim.expires_in else ""
            gid = record.generation_id or "-"
            out(f"  {key}  {record.state}  {gid}  {record.path or ''}  {held}".rstrip())


def cmd_gallery(args: argparse.Namespace) -> int:
    from lumasched.gallery import write_gallery

    folder: Path = args.dir
    if not folder.is_dir():
        err(f"{folder}: not a directory")
        return EXIT_USAGE
    if args.journal is None and not (folder / JOURNAL_NAME).is_file():
        if not (folder / RESULTS_NAME).is_file():
            err(f"{folder}: neither {JOURNAL_NAME} nor {RESULTS_NAME} there (not a run's --out)")
            return EXIT_USAGE
    elif args.journal is not None and not args.journal.is_file():
        err(f"--journal {args.journal}: no such file")
        return EXIT_USAGE
    try:
        page = write_gallery(folder, journal_path=args.journal)
    except OSError as exc:
        raise StorageError(str(exc.strerror or exc), path=str(folder), what="gallery") from exc
    out(f"gallery: {page}")
    return EXIT_OK
