"""``DIR/results.jsonl``: one line per finished manifest item, written as items finish
and kept across runs."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Set
from pathlib import Path
from typing import Any

from lumasched.store._storage import storage_error

__all__ = ["ResultsWriter"]


class ResultsWriter:
    """``results.jsonl`` kept across runs: one line per finished item, flushed as
    each is written.

    A run never truncates the file, so one stopped in any way (even SIGKILL)
    loses no line of an earlier run. An item reported again with the same
    outcome (a rerun re-lists what the journal finished) keeps its line; one
    whose outcome changed (a failed download fetched again) has its line
    replaced when the run ends, by an atomic rewrite; killed before that, the
    file still lists the item once, as it was. A line cut short by a kill is
    dropped (its item is listed again when reported).

    A line the disk refuses (no space, read-only) is taken back whole, so the
    file never ends in a partial line, and ``StorageError`` is raised.

    Every method does file I/O (``close`` fsyncs): async code calls them in a
    worker thread (``anyio.to_thread.run_sync``), and ``write`` and ``close``
    are thread-safe.

    ``forget``: items this run creates anew (``--redo-changed``,
    ``--retry-failed``): their old lines go at once, so that the file never
    shows a result that no longer stands. ``manifest_ids``: the items of the
    manifest now; a line of an item no longer in it is kept (its file is still
    there) and marked ``"in_manifest": false``.
    """

    def __init__(
        self,
        path: Path,
        *,
        forget: Iterable[str] = (),
        manifest_ids: Set[str] | None = None,
    ) -> None:
        self.path = path
        self._outcomes: dict[str, int] = {}
        """Item id -> fingerprint of the outcome its line shows."""
        self._changed: dict[str, str] = {}
        """Item id -> the line to put in place of its old one."""
        self._forget = set(forget)
        self._manifest_ids = manifest_ids
        self._lock = threading.Lock()
        try:
            untidy = self._load()
            if untidy or self._forget & set(self._outcomes) or self._marks_to_change():
                self._rewrite()
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(exc, path, "results") from exc
        for key in self._forget:
            self._outcomes.pop(key, None)
        self._forget.clear()

    def write(self, line: dict[str, Any]) -> None:
        with self._lock:
            self._write(line)

    def _write(self, line: dict[str, Any]) -> None:
        assert self._fd is not None
        key = str(line["id"])
        outcome = _outcome(line)
        known = self._outcomes.get(key)
        if known == outcome:
            return
        text = _dumps(line)
        if known is None:
            self._append(self._fd, text.encode())
        else:
            self._changed[key] = text
        self._outcomes[key] = outcome

    def _append(self, fd: int, data: bytes) -> None:
        """Append one whole line, or nothing: a write cut short is truncated away."""
        size = os.fstat(fd).st_size
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise storage_error(exc, self.path, "results") from exc

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._changed:
                try:
                    self._rewrite()
                except OSError as exc:
                    raise storage_error(exc, self.path, "results") from exc
                finally:
                    self._changed.clear()

    def _marks_to_change(self) -> bool:
        ids = self._manifest_ids
        return ids is not None and any(
            (key in ids) != self._in_manifest.get(key, True) for key in self._outcomes
        )

    def _mark(self, line: dict[str, Any]) -> dict[str, Any]:
        """``line`` with ``in_manifest`` as the manifest now says."""
        ids = self._manifest_ids
        if ids is None:
            return line
        line = dict(line)
        if line["id"] in ids:
            line.pop("in_manifest", None)
        else:
            line["in_manifest"] = False
        return line

    def _load(self) -> bool:
        """Read the outcomes an earlier run listed; True if the file needs tidying
        (a line cut short, an item listed twice)."""
        self._in_manifest: dict[str, bool] = {}
        untidy = False
        try:
            file = self.path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False
        with file:
            for raw in file:
                line = _parse(raw)
                if line is None or line["id"] in self._outcomes or not raw.endswith("\n"):
                    untidy = True
                if line is not None and line["id"] not in self._outcomes:
                    self._outcomes[line["id"]] = _outcome(line)
                    if line.get("in_manifest") is False:
                        self._in_manifest[line["id"]] = False
        return untidy

    def _rewrite(self) -> None:
        """Every whole line once, changed ones replaced, swapped in atomically."""
        part = self.path.with_name(self.path.name + ".part")
        written: set[str] = set()
        if not self.path.exists():  # removed by hand while the run went on
            self.path.touch()
        try:
            with (
                self.path.open(encoding="utf-8", errors="replace") as old,
                part.open("w", encoding="utf-8") as new,
            ):
                for raw in old:
                    line = _parse(raw)
                    if line is None or line["id"] in written or line["id"] in self._forget:
                        continue
                    key = line["id"]
                    written.add(key)
                    text = self._changed.get(key)
                    if text is None:
                        marked = self._mark(line)
                        text = raw.rstrip("\n") + "\n" if marked == line else _dumps(marked)
                    new.write(text)
                new.flush()
                os.fsync(new.fileno())
            os.replace(part, self.path)
        except OSError:
            # The old file stays as it was (whole lines); the copy goes.
            with contextlib.suppress(OSError):
                part.unlink()
            raise


_OUTCOME_FIELDS = ("state", "generation_id", "path", "sha256", "bytes", "failure_reason")


def _outcome(line: dict[str, Any]) -> int:
    """What a line says about its item, timings aside."""
    return hash(json.dumps([line.get(name) for name in _OUTCOME_FIELDS]))


def _dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


def _parse(raw: str) -> dict[str, Any] | None:
    """A whole results line, or None (cut short, or not ours)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(line, dict) or not isinstance(line.get("id"), str):
        return None
    return line
