"""What a run folder holds, item by item: the journal's requests and states merged
with ``results.jsonl`` (which may hold lines from other hosts or older versions)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from lumasched.errors import JournalError
from lumasched.pricing import estimate_cost_cents
from lumasched.store.journal import Journal, JournalRecord

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Item", "RunData", "collect"]

JOURNAL_NAME = "journal.sqlite"
RESULTS_NAME = "results.jsonl"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm"})
_SHOWN_APART = frozenset({"prompt", "model", "generation_type", "callback_url"})


@attrs.frozen
class Item:
    """One manifest item as the gallery shows it."""

    id: str
    state: str
    kind: str = "unknown"
    family: str = "unknown"
    model: str | None = None
    prompt: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    depends_on: tuple[str, ...] = ()
    generation_id: str | None = None
    path: Path | None = None
    """The asset file (absolute), when there is one on disk."""
    bytes: int | None = None
    failure_reason: str | None = None
    queued: float | None = None
    created: float | None = None
    completed: float | None = None
    downloaded: float | None = None
    cost_cents: float | None = None
    in_manifest: bool = True
    attempts: int = 0

    @property
    def media(self) -> str | None:
        """``"image"``, ``"video"`` or None (no file, or one of another kind)."""
        if self.path is None:
            return None
        suffix = self.path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return "image"
        if suffix in VIDEO_SUFFIXES:
            return "video"
        return None

    @property
    def latency(self) -> float | None:
        """Seconds from the create to the generation's end (the server's time)."""
        if self.created is None or self.completed is None or self.completed < self.created:
            return None
        return self.completed - self.created


@attrs.frozen
class RunData:
    """Every item of a run folder, in submission order, and what the run recorded."""

    out_dir: Path
    items: list[Item]
    meta: dict[str, Any]
    """What the last run wrote down for its report (limits, counters), if anything."""


def collect(out_dir: Path, *, journal_path: Path | None = None) -> RunData:
    """Read ``out_dir``'s journal (if any) and ``results.jsonl`` (if any).

    The journal holds the requests (prompt, model, options, chains); a results
    line adds what it alone knows (an item finished on another host, or in a
    folder whose journal is gone) and wins on the outcome of a finished item."""
    out_dir = out_dir.resolve()
    journal_path = journal_path or out_dir / JOURNAL_NAME
    items: dict[str, Item] = {}
    meta: dict[str, Any] = {}
    if journal_path.is_file():
        with contextlib.suppress(JournalError), Journal(journal_path, read_only=True) as journal:
            for record in journal.records():
                items[record.key] = _from_record(record, out_dir)
            with contextlib.suppress(ValueError, TypeError):
                meta = json.loads(journal.meta("report") or "{}")
    for line in _results(out_dir / RESULTS_NAME):
        key = line["id"]
        known = items.get(key)
        items[key] = _merge(known, line, out_dir)
    return RunData(out_dir=out_dir, items=list(items.values()), meta=meta)


def _from_record(record: JournalRecord, out_dir: Path) -> Item:
    request = dict(record.request)
    cost: float | None
    try:
        cost = estimate_cost_cents(record.kind, request)
    except (ValueError, TypeError, KeyError):
        cost = None
    return Item(
        id=record.key,
        state=record.state,
        kind=record.kind,
        family=record.family,
        model=_str(request.get("model")),
        prompt=_str(request.get("prompt")),
        options={k: v for k, v in sorted(request.items()) if k not in _SHOWN_APART},
        depends_on=record.depends_on,
        generation_id=record.generation_id,
        path=_asset(record.path, out_dir),
        bytes=record.bytes,
        failure_reason=record.reason if record.state in ("failed", "cancelled") else None,
        queued=record.queued_at,
        created=record.created_at,
        completed=record.completed_at,
        downloaded=record.downloaded_at,
        cost_cents=cost,
        attempts=record.attempts,
    )


def _merge(known: Item | None, line: dict[str, Any], out_dir: Path) -> Item:
    timings = line.get("timings") if isinstance(line.get("timings"), dict) else {}
    assert isinstance(timings, dict)
    outcome: dict[str, Any] = {
        "state": _str(line.get("state")) or "unknown",
        "generation_id": _str(line.get("generation_id")),
        "path": _asset(_str(line.get("path")), out_dir),
        "bytes": line.get("bytes") if isinstance(line.get("bytes"), int) else None,
        "failure_reason": _str(line.get("failure_reason")),
        "in_manifest": line.get("in_manifest") is not False,
    }
    for name in ("queued", "created", "completed", "downloaded"):
        at = _time(timings.get(name))
        if at is not None or known is None:
            outcome[name] = at
    if known is None:
        return Item(id=str(line["id"]), **outcome)
    if known.state not in ("completed", "failed") or outcome["state"] in ("completed", "failed"):
        return attrs.evolve(known, **outcome)
    return known


def _results(path: Path) -> Iterator[dict[str, Any]]:
    try:
        file = path.open(encoding="utf-8", errors="replace")
    except OSError:
        return
    with file:
        for raw in file:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a line cut short by a kill
            if isinstance(line, dict) and isinstance(line.get("id"), str):
                yield line


def _asset(path: str | None, out_dir: Path) -> Path | None:
    """The file, if it is there: a results line from another host names a path on
    that host, so look for the same name in this folder too."""
    if not path:
        return None
    given = Path(path)
    for candidate in (given if given.is_absolute() else out_dir / given, out_dir / given.name):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _time(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value).timestamp()
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
