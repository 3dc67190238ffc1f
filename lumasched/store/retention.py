"""Retention of an output folder: downloaded assets older than a limit, or past a
count, are deleted; the journal and results.jsonl never are.

Deleting an asset loses nothing the journal needs: submitting its key again
(``Scheduler.submit`` with an ``out_dir``) checks the file and downloads it
again while the API still serves its URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from lumasched.store._storage import storage_error

__all__ = ["prune_out_dir"]

# Files of the run itself, never assets.
_KEEP_SUFFIXES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".lock", ".jsonl", ".part")


def prune_out_dir(
    out_dir: str | Path,
    *,
    max_age: float | None = None,
    max_files: int | None = None,
    keep: Iterable[str] = (),
    now: float | None = None,
) -> list[Path]:
    """Delete assets in ``out_dir`` (not its subfolders) modified more than
    ``max_age`` seconds ago, then the oldest beyond ``max_files``; returns what was
    deleted. ``keep`` names files never to delete (e.g. ones a page still shows).
    The journal, its lock, ``results.jsonl`` and ``.part`` downloads in progress
    are never touched.
    """
    if max_age is not None and max_age < 0:
        raise ValueError(f"max_age must be >= 0 seconds, got {max_age!r}")
    if max_files is not None and max_files < 0:
        raise ValueError(f"max_files must be >= 0, got {max_files!r}")
    folder = Path(out_dir)
    protected = set(keep)
    now = time.time() if now is None else now
    assets: list[tuple[float, Path]] = []
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
        for path in entries:
            if path.name in protected or path.name.endswith(_KEEP_SUFFIXES):
                continue
            stat = path.lstat()
            if path.is_file() and not path.is_symlink():
                assets.append((stat.st_mtime, path))
    except OSError as exc:
        raise storage_error(exc, folder, "output folder") from exc
    assets.sort(key=lambda item: item[0], reverse=True)  # newest first
    doomed: list[Path] = []
    for index, (mtime, path) in enumerate(assets):
        too_old = max_age is not None and now - mtime > max_age
        too_many = max_files is not None and index >= max_files
        if too_old or too_many:
            doomed.append(path)
    removed = []
    for path in doomed:
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # someone else pruned it first
        except OSError as exc:
            raise storage_error(exc, path, "output folder") from exc
        removed.append(path)
    return removed
