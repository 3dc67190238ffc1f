"""``lumasched claims import``: put other hosts' records back into the claims.

After Redis lost its state, the items that a host that is gone may have made
wait (``EXIT_CLAIMS_WAIT``) until what that host did is known again. This reads
the ``--out`` directories named (their journal, or their ``results.jsonl``
when the journal is gone), keeps the records of this batch's requests, writes
the ones Redis does not hold, and lets the waiting items go: the next run
creates only what nobody made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from lumasched._config import ENV_API_KEY, ENV_REDIS_URL, Settings
from lumasched.claims import ClaimRecord, ClaimStore, Reseed, batch_id, item_digest

__all__ = ["build_parser", "main"]

JOURNAL_NAME = "journal.sqlite"
RESULTS_NAME = "results.jsonl"


def build_parser(prog: str = "lumasched claims") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Work with the item claims that hosts share through Redis."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="import: see import --help"
    )
    imp = sub.add_parser(
        "import",
        help="import other hosts' journals / results.jsonl into the claims",
        description="After Redis lost its state: import what the hosts that are gone did "
        "(their --out directories), so the items that waited for them can run.",
    )
    imp.add_argument("manifest", metavar="MANIFEST", help="the batch's manifest")
    imp.add_argument("dirs", metavar="DIR", nargs="+", type=Path, help="--out directories")
    imp.add_argument("--batch", metavar="NAME", help="the --batch NAME the runs used")
    imp.add_argument("--redis", metavar="URL", help=f"Redis URL (default: ${ENV_REDIS_URL})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(redis_url=args.redis)
    if settings.redis_url is None:
        _err(f"no Redis: give --redis URL or set {ENV_REDIS_URL}")
        return 2
    if settings.api_key is None:
        _err(f"no API key: the claims are per account; set {ENV_API_KEY}")
        return 2
    from lumasched.manifest import Manifest, ManifestError

    manifest = Manifest(args.manifest)
    try:
        manifest.check()
    except ManifestError as exc:
        _err(str(exc))
        return 2
    digests = {item.id: item_digest(item) for item in manifest}
    facts: list[Reseed] = []
    for directory in args.dirs:
        found, skipped = _read_dir(directory, digests)
        if found is None:
            _err(f"{directory}: no {JOURNAL_NAME} or {RESULTS_NAME} (is it an --out directory?)")
            return 2
        facts += found
        other = f", {skipped} record(s) of other requests skipped" if skipped else ""
        _out(f"{directory}: {len(found)} record(s) of this batch{other}")
    batch = batch_id(manifest, name=args.batch)
    store = ClaimStore(settings.redis_url, api_key=settings.api_key, manifest=batch, owner="import")

    async def go() -> int:
        async with store:
            return await store.put_back(facts, settle=True)

    try:
        written = asyncio.run(asyncio.wait_for(go(), 60))
    except TimeoutError:
        _err("could not write to Redis within 60s (unreachable?); nothing may be imported")
        return 1
    _out(
        f"batch {batch}: {written} record(s) imported ({len(facts) - written} already held); "
        "the items that waited can run: run the same command again"
    )
    return 0


def _read_dir(directory: Path, digests: dict[str, str]) -> tuple[list[Reseed] | None, int]:
    """The records of this batch in one --out directory, and how many were of
    other requests (another manifest with the same item ids)."""
    journal = directory / JOURNAL_NAME
    if journal.is_file():
        return _from_journal(journal, digests)
    results = directory / RESULTS_NAME
    if results.is_file():
        return list(_from_results(results, digests)), 0
    return None, 0


def _from_journal(path: Path, digests: dict[str, str]) -> tuple[list[Reseed], int]:
    from lumasched.cli._multihost import journal_fact
    from lumasched.store.journal import Journal

    facts: list[Reseed] = []
    skipped = 0
    with Journal(path, read_only=True) as journal:  # a run may hold it: read only
        for row in journal.records():
            record = journal_fact(row, None)
            if record is None:
                continue
            if digests.get(row.key) != record.digest:
                skipped += 1
                continue
            facts.append(Reseed(row.key, record.digest, record))
    return facts, skipped


def _from_results(path: Path, digests: dict[str, str]) -> Iterator[Reseed]:
    """results.jsonl lines do not say which request they answer: they are taken as
    this manifest's (the user named the directory)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        key = data.get("id")
        if key not in digests or data.get("state") not in ("completed", "failed"):
            continue
        record = ClaimRecord(
            item=key,
            state=data["state"],
            generation_id=data.get("generation_id"),
            path=data.get("path"),
            sha256=data.get("sha256"),
            bytes=data.get("bytes"),
            reason=data.get("failure_reason"),
            digest=digests[key],
        )
        yield Reseed(key, digests[key], record)


def _out(text: str) -> None:
    print(text)


def _err(text: str) -> None:
    print(f"lumasched claims: error: {text}", file=sys.stderr)
