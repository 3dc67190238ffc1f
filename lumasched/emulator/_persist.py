"""The emulator's memory on disk (``EmulatorConfig(state_path=...)``).

A real API never forgets a generation, so an emulator with a state file does
not either. One SQLite file keeps every generation: its request echo, its
timeline and whether it was deleted. It also keeps every job's slot, charge and
rate-window place, the starting credit balance, the asset-signing secret and
the port last served on. Times are stored on the wall clock and turned back
into ``time.monotonic`` values on load, so jobs go on along their timelines
while the emulator is down.

A create or delete is committed before it is answered. The file is in WAL mode
with ``synchronous=NORMAL``: a commit is in the operating system's hands at
once, so killing the emulator's process at any moment loses nothing that was
answered; a power cut keeps the file consistent but may lose the last commits.
One emulator at a time: the file is locked (``flock``) while it is open
(not on Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from lumasched.api import Family
from lumasched.emulator._state import Record, SlotJob, Timeline
from lumasched.emulator._validate import CreateSpec
from lumasched.errors import ConfigurationError

if sys.platform != "win32":
    import fcntl

__all__ = ["SavedState", "StateFile"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    body TEXT NOT NULL,
    created_wall REAL NOT NULL,
    created REAL NOT NULL,
    dreaming_at REAL NOT NULL,
    done_at REAL NOT NULL,
    failure_reason TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    family TEXT NOT NULL,
    created REAL NOT NULL,
    done_at REAL NOT NULL,
    cost_cents REAL NOT NULL,
    failed INTEGER NOT NULL,
    fingerprint TEXT NOT NULL
);
"""


def _wall_offset() -> float:
    """Add to a ``time.monotonic`` value to get UNIX time (subtract for the reverse)."""
    return time.time() - time.monotonic()


@attrs.frozen
class SavedState:
    """What a state file holds, with times on this process's monotonic clock."""

    records: list[Record]
    """Every generation, deleted ones too, oldest first."""
    jobs: list[SlotJob]
    balance_cents: float
    """The balance before any job was charged."""
    secret: bytes
    port: int | None


class StateFile:
    """An open, locked state file. ``balance_cents`` and ``secret`` are used
    only when the file is new; afterwards the file's own values win."""

    def __init__(self, path: str | os.PathLike[str], *, balance_cents: float, secret: bytes):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"{self.path}: cannot open emulator state: {exc}") from exc
        try:
            if sys.platform != "win32":
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise ConfigurationError(
                f"{self.path}: emulator state file is in use by another emulator"
            ) from exc
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            os.close(self._lock_fd)
            raise ConfigurationError(f"{self.path}: cannot open emulator state: {exc}") from exc
        try:
            self._init(balance_cents, secret)
        except (sqlite3.DatabaseError, ConfigurationError) as exc:
            self.close()
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"{self.path}: not an emulator state file: {exc}") from exc

    def _init(self, balance_cents: float, secret: bytes) -> None:
        conn = self._conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        with self._tx() as cur:
            meta = dict(cur.execute("SELECT name, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version != SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self.path}: emulator state schema {version}, this lumasched reads "
                    f"{SCHEMA_VERSION}; use the lumasched that wrote it or a new file"
                )
            defaults = {
                "schema_version": str(SCHEMA_VERSION),
                "balance_cents": repr(float(balance_cents)),
                "secret": secret.hex(),
            }
            for name, value in defaults.items():
                if name not in meta:
                    cur.execute("INSERT INTO meta VALUES (?, ?)", (name, value))
                    meta[name] = value
        self._meta = meta

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def close(self) -> None:
        """Close the file and release the lock. Safe to call twice."""
        if self._lock_fd < 0:
            return
        try:
            self._conn.close()
        finally:
            # After the connection: closing any descriptor of the file drops
            # the POSIX locks SQLite holds on it.
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __repr__(self) -> str:
        return f"StateFile({str(self.path)!r})"

    # -- reading -------------------------------------------------------------------
    def load(self) -> SavedState:
        offset = _wall_offset()
        conn = self._conn
        records = [
            self._record(row, offset)
            for row in conn.execute("SELECT * FROM generations ORDER BY seq")
        ]
        jobs = [
            SlotJob(
                done_at - offset,
                seq,
                Family(family),
                cost,
                failed=bool(failed),
                created=created - offset,
                fingerprint=fingerprint,
            )
            for seq, family, created, done_at, cost, failed, fingerprint in conn.execute(
                "SELECT * FROM jobs ORDER BY seq"
            )
        ]
        meta = self._meta
        port = meta.get("port")
        return SavedState(
            records=records,
            jobs=jobs,
            balance_cents=float(meta["balance_cents"]),
            secret=bytes.fromhex(meta["secret"]),
            port=int(port) if port else None,
        )

    @staticmethod
    def _record(row: tuple[Any, ...], offset: float) -> Record:
        (gen_id, seq, version, deleted, kind, spec, body, created_wall) = row[:8]
        created, dreaming_at, done_at, failure_reason = row[8:]
        fields = json.loads(spec)
        fields["input_urls"] = tuple(fields.get("input_urls", ()))
        return Record(
            id=gen_id,
            seq=seq,
            kind=kind,
            spec=CreateSpec(**fields),
            body=json.loads(body),
            created_wall=created_wall,
            timeline=Timeline(
                created - offset, dreaming_at - offset, done_at - offset, failure_reason
            ),
            version=version,
            deleted=bool(deleted),
        )

    # -- writing -------------------------------------------------------------------
    def save_create(self, record: Record, job: SlotJob) -> None:
        """A create (or a same-id restart of ``record``) and the job it started."""
        offset = _wall_offset()
        timeline = record.timeline
        with self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.seq,
                    record.version,
                    int(record.deleted),
                    record.kind,
                    json.dumps(attrs.asdict(record.spec)),
                    json.dumps(record.body),
                    record.created_wall,
                    timeline.created + offset,
                    timeline.dreaming_at + offset,
                    timeline.done_at + offset,
                    timeline.failure_reason,
                ),
            )
            cur.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job.seq,
                    job.family.value,
                    job.created + offset,
                    job.done_at + offset,
                    job.cost_cents,
                    int(job.failed),
                    job.fingerprint,
                ),
            )

    def save_delete(self, gen_id: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE generations SET deleted = 1 WHERE id = ?", (gen_id,))

    def save_port(self, port: int) -> None:
        """The port served on, tried first by the next start on a free port."""
        self._set_meta("port", str(port))

    def clear(self, balance_cents: float) -> None:
        """Forget every generation and job; the balance starts again at ``balance_cents``."""
        with self._tx() as cur:
            cur.execute("DELETE FROM generations")
            cur.execute("DELETE FROM jobs")
        self._set_meta("balance_cents", repr(float(balance_cents)))

    def _set_meta(self, name: str, value: str) -> None:
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        self._meta[name] = value
