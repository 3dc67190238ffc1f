"""The upload log: which local files are already stored where, and under which URL.

A small SQLite file beside the journal (``uploads.sqlite``), apart from the
journal's own schema: one row per (target, sha256) -- the object's key, its
URL and when that URL expires (``NULL``: a public URL that does not) -- and a
cache of file hashes keyed by (path, size, mtime), so a rerun neither uploads
nor re-reads a large video. Calls are short and synchronous; async callers run
them in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import attrs

__all__ = ["UploadLog", "UploadRecord"]

UPLOADS_NAME = "uploads.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    target      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    key         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    url         TEXT NOT NULL,
    expires_at  REAL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (target, sha256)
);
CREATE TABLE IF NOT EXISTS hashes (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL
);
"""


@attrs.frozen
class UploadRecord:
    """A stored object: ``url`` serves it until ``expires_at`` (None: always)."""

    target: str
    sha256: str
    key: str
    size: int
    url: str
    expires_at: float | None
    uploaded_at: float


class UploadLog:
    """The upload log at ``path`` (``":memory:"`` for one process only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> UploadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, target: str, sha256: str) -> UploadRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT target, sha256, key, size, url, expires_at, uploaded_at "
                "FROM uploads WHERE target = ? AND sha256 = ?",
                (target, sha256),
            ).fetchone()
        return None if row is None else UploadRecord(*row)

    def put(self, record: UploadRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(record),
            )

    def renewed(self, record: UploadRecord, url: str, expires_at: float | None) -> UploadRecord:
        """Record a freshly signed URL for a stored object; return the new record."""
        new = attrs.evolve(record, url=url, expires_at=expires_at)
        self.put(new)
        return new

    def hash_of(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """The remembered sha256 of ``path`` if it has not changed since."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                (str(path), size, mtime_ns),
            ).fetchone()
        return None if row is None else str(row[0])

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                (str(path), size, mtime_ns, sha256),
            )

    def count(self, target: str | None = None) -> int:
        """How many objects the log holds (for ``target``, or in all)."""
        sql, args = "SELECT COUNT(*) FROM uploads", tuple[str, ...]()
        if target is not None:
            sql, args = sql + " WHERE target = ?", (target,)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])
