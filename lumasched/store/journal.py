"""The crash-safe record of every job: SQLite (stdlib) in WAL mode.

One row per job, keyed by a stable key (the manifest item id). The order of
writes is what makes restarts safe:

1. the *intent* (the exact body, the lease id, the wall-clock send time) is
   committed **before** a create leaves the process;
2. the generation id is committed as soon as the server returns it;
3. the final generation and the downloaded file's path and sha256 follow.

A restart therefore finds each job in one of three situations: never sent
(create it), sent with an id (poll it), or sent without an id (reconcile it
against the list endpoint before anything else). Commits use
``synchronous=FULL`` so even a power cut cannot lose an intent; bulk inserts
of new jobs are batched into one transaction.

All methods are synchronous, short and thread-safe: writes go through one
connection behind a lock, reads through a second one, so that a read never
waits for a write's fsync. Async code never calls them on its event loop: the
scheduler reaches the journal only through ``store._writes.JournalWriter``,
which reads it once in a worker thread and keeps the records in memory, kept
true by ``watch`` (every commit hands its watchers the rows it changed), and
commits several writes at once in one transaction in a worker thread
(``Journal.apply``: one fsync for all of them); the CLI's ``status`` command
reads directly.

A journal has one owner at a time: opening one takes an exclusive OS lock on
``<path>.lock`` (``lumasched.store._ownership``), so a second ``Journal`` on the same
file, in any process, raises ``JournalLockedError`` naming the holder. The
kernel drops the lock when its process dies, so a killed run never blocks the
next. ``Journal(path, read_only=True)`` is a reader (``lumasched status``): it
takes no lock and works while a run holds the journal.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import attrs

from lumasched.errors import JournalError, StorageError
from lumasched.store._ownership import OwnerLock
from lumasched.store._storage import is_storage_error, sqlite_storage_error, storage_error

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "Journal",
    "JournalBatch",
    "JournalRecord",
    "NewJob",
    "Row",
    "Write",
]

SCHEMA_VERSION = 1

_FINISHED = ("completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    key            TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    request        TEXT NOT NULL,
    family         TEXT NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    depends_on     TEXT NOT NULL DEFAULT '[]',
    state          TEXT NOT NULL,
    reason         TEXT,
    error_type     TEXT,
    generation_id  TEXT,
    lease_id       TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    intent_body    TEXT,
    intent_at      REAL,
    owner          TEXT,
    generation     TEXT,
    path           TEXT,
    sha256         TEXT,
    bytes          INTEGER,
    queued_at      REAL,
    created_at     REAL,
    completed_at   REAL,
    downloaded_at  REAL,
    updated_at     REAL NOT NULL,
    request_digest TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_generation
    ON jobs (generation_id) WHERE generation_id IS NOT NULL;
"""


COLUMNS = (
    "key",
    "seq",
    "kind",
    "request",
    "family",
    "priority",
    "depends_on",
    "state",
    "reason",
    "error_type",
    "generation_id",
    "lease_id",
    "attempts",
    "intent_body",
    "intent_at",
    "owner",
    "generation",
    "path",
    "sha256",
    "bytes",
    "queued_at",
    "created_at",
    "completed_at",
    "downloaded_at",
    "updated_at",
    "request_digest",
)
"""The ``jobs`` table's columns, in the order of a ``Row``."""

Row = tuple[Any, ...]
"""One row of the ``jobs`` table, as stored (JSON columns as text), in ``COLUMNS`` order."""

_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_EMPTY: Row = tuple(
    0 if name in ("priority", "attempts") else "[]" if name == "depends_on" else None
    for name in COLUMNS
)
"""A row's defaults (the schema's), which an insert's values replace."""


class _Increment:
    """A column set to its value plus one (``attempts``)."""


_INCREMENT = _Increment()
_INSERT = "insert"
_Change = tuple[str, str | None, dict[str, Any]]
"""A write's change to one row: key, ``_INSERT`` or None (an update), column values."""


@attrs.frozen
class NewJob:
    """A job to record before it starts."""

    key: str
    kind: str
    request: dict[str, Any]
    family: str
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    state: str = "pending"
    queued_at: float | None = None


@attrs.frozen
class JournalRecord:
    """One row of the journal, as last committed."""

    key: str
    seq: int
    kind: str
    request: dict[str, Any]
    family: str
    priority: int
    depends_on: tuple[str, ...]
    state: str
    reason: str | None
    error_type: str | None
    generation_id: str | None
    lease_id: str | None
    attempts: int
    intent_body: dict[str, Any] | None
    intent_at: float | None
    owner: str | None
    generation: dict[str, Any] | None
    path: str | None
    sha256: str | None
    bytes: int | None
    queued_at: float | None
    created_at: float | None
    completed_at: float | None
    downloaded_at: float | None
    updated_at: float
    request_digest: str | None = None
    """Digest of the request as submitted when its create was sent (see
    ``lumasched.manifest._changes.request_digest``); None before that, and in journals
    written before lumasched recorded it."""

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    @classmethod
    def from_row(cls, row: sqlite3.Row | Row) -> JournalRecord:
        """The record of a row of the ``jobs`` table (see ``Journal.watch``)."""
        values = dict(zip(COLUMNS, row, strict=True)) if isinstance(row, tuple) else dict(row)
        values["request"] = json.loads(values["request"])
        values["depends_on"] = tuple(json.loads(values["depends_on"]))
        for name in ("intent_body", "generation"):
            if values[name] is not None:
                values[name] = json.loads(values[name])
        return cls(**values)


_UPDATABLE = frozenset(COLUMNS) - {
    # written only by the intent (and restart), or by the journal itself
    "key",
    "seq",
    "attempts",
    "intent_body",
    "intent_at",
    "owner",
    "updated_at",
    "request_digest",
}


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as the columns store them (JSON as text)."""
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not journal columns: {sorted(unknown)}")
    stored: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ("generation", "request") and value is not None:
            value = _dumps(value)
        elif name == "depends_on":
            value = _dumps(list(value))
        stored[name] = value
    return stored


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)
"""One encoder for every write (``json.dumps`` with options builds one per call)."""


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


@functools.lru_cache(maxsize=256)
def _update_sql(names: tuple[str, ...], increments: frozenset[str]) -> str:
    """The UPDATE of one row's ``names`` (those in ``increments`` plus one)."""
    sets = ", ".join(f"{n} = {n} + 1" if n in increments else f"{n} = ?" for n in names)
    return f"UPDATE jobs SET {sets} WHERE key = ?"


class Journal:
    """A batch's job record in one SQLite file.

    ``batch`` names the batch the file belongs to: opening a journal written for
    another batch (or by a newer lumasched) raises ``JournalError``. A write the
    disk refuses (no space, read-only, permissions) raises ``StorageError`` and
    leaves the last commit as it was. Use it as a context manager or call
    ``close()``.
    """

    def __init__(
        self, path: str | Path, *, batch: str | None = None, read_only: bool = False
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.batch = batch
        self._lock = threading.Lock()
        self._order = threading.RLock()
        """Held from a write's transaction through its watchers' calls."""
        self._watchers: list[Callable[[list[Row]], object]] = []
        self._mirror: dict[str, Row] = {}
        """Every row as committed, kept while someone watches: a commit's changed
        rows are made from it and what was written, never read back."""
        self._owner: OwnerLock | None = None
        if read_only:
            self._open_reader_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Before SQLite touches anything: a second owner must change nothing.
            self._owner = OwnerLock(self.path)
        except OSError as exc:  # no space, a read-only file system, permissions
            raise storage_error(exc, self.path, "journal") from exc
        try:
            self._open()
        except BaseException:
            self._owner.release()
            raise

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except OSError as exc:
            raise storage_error(exc, self.path, "journal") from exc
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open journal: {exc}") from exc
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._init_schema(self.batch)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_storage_error(exc):
                raise sqlite_storage_error(exc, self.path) from exc
            raise JournalError(f"{self.path}: not a usable journal: {exc}") from exc
        except (JournalError, StorageError):
            conn.close()
            raise
        self._next_seq = self._scalar("SELECT COALESCE(MAX(seq), 0) FROM jobs") + 1
        # Reads have a connection (and a lock) of their own: in WAL mode they see
        # the last commit without waiting for a write in progress.
        self._read_lock = threading.Lock()
        try:
            reader = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"{self.path}: cannot open journal: {exc}") from exc
        reader.row_factory = sqlite3.Row
        reader.execute("PRAGMA busy_timeout=30000")
        self._reader = reader

    def _open_reader_only(self) -> None:
        """A reader: no lock, no schema change; every write raises ``JournalError``."""
        if not self.path.is_file():
            raise JournalError(f"{self.path}: no journal there")
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: not a usable journal: {exc}") from exc
        version = int(meta.get("schema_version", SCHEMA_VERSION))
        if version != SCHEMA_VERSION:
            conn.close()
            raise JournalError(
                f"{self.path}: journal schema {version}, this lumasched reads {SCHEMA_VERSION}"
            )
        self.batch = meta.get("batch")
        self._conn = conn
        self._reader = conn
        self._read_lock = threading.Lock()
        self._next_seq = 0

    def _init_schema(self, batch: str | None) -> None:
        with self._lock:
            self._conn.executescript(_SCHEMA)
        with self._tx() as cur:
            meta = dict(cur.execute("SELECT name, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version != SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: journal schema {version}, this lumasched reads "
                    f"{SCHEMA_VERSION}; use the lumasched that wrote it or a new journal"
                )
            cur.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            stored = meta.get("batch")
            if batch is not None and stored is not None and stored != batch:
                raise JournalError(
                    f"{self.path}: journal belongs to batch {stored!r}, not {batch!r}; "
                    "use another --journal path (or --out directory) for a different batch"
                )
            if batch is not None and stored is None:
                cur.execute("INSERT INTO meta VALUES ('batch', ?)", (batch,))
            self.batch = batch if stored is None else stored
            columns = {row[1] for row in cur.execute("PRAGMA table_info(jobs)").fetchall()}
            if "request_digest" not in columns:
                # Written by lumasched 0.1.0: the digest is new. Old rows keep NULL
                # (their recorded request stands in for it; see lumasched.manifest._changes).
                cur.execute("ALTER TABLE jobs ADD COLUMN request_digest TEXT")

    class _Tx:
        def __init__(self, journal: Journal) -> None:
            self.journal = journal

        def __enter__(self) -> sqlite3.Cursor:
            if self.journal.read_only:
                raise JournalError(f"{self.journal.path}: opened read-only")
            self.journal._lock.acquire()
            try:
                self.cur = self.journal._conn.cursor()
                if not self.journal._conn.in_transaction:
                    self.cur.execute("BEGIN IMMEDIATE")
            except BaseException as exc:
                self.journal._lock.release()
                self.journal._raise_storage(exc)
                raise
            return self.cur

        def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
            conn = self.journal._conn
            try:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
                    except sqlite3.Error as commit_exc:
                        if conn.in_transaction:  # a failed COMMIT leaves it open
                            conn.execute("ROLLBACK")
                        self.journal._raise_storage(commit_exc)
                        raise
            finally:
                self.cur.close()
                self.journal._lock.release()
            if exc is not None:
                self.journal._raise_storage(exc)

    def _raise_storage(self, exc: BaseException) -> None:
        """Raise a ``StorageError`` instead of ``exc`` when the disk is the problem."""
        if is_storage_error(exc):
            assert isinstance(exc, sqlite3.Error)
            raise sqlite_storage_error(exc, self.path) from exc

    def _tx(self) -> Journal._Tx:
        return Journal._Tx(self)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[JournalBatch]:
        """One transaction's writes; once committed, the watchers see what changed."""
        with self._order:
            with self._tx() as cur:
                batch = JournalBatch(self, cur)
                yield batch
            self._notify(batch.changes)

    # -- watchers -----------------------------------------------------------

    def watch(self, listener: Callable[[list[Row]], object]) -> list[Row]:
        """Call ``listener(rows)`` after every later commit with the rows it
        changed, as committed, in the thread that committed (commits and their
        calls keep their order); returns every row as committed now.

        Rows, not records: decoding a record's JSON is most of a read's cost, and
        a copy in memory (``store._writes.JournalWriter``) reads few of the rows
        it keeps; ``JournalRecord.from_row`` decodes one. The copy stays true
        whoever writes, the scheduler or the CLI beside it. The rows a commit
        changed are made from what it wrote, not read back: reading them from
        the database again cost more than writing them.
        """
        with self._order:
            if not self._watchers:
                with self._read_lock:
                    cur = self._reader.cursor()
                    cur.row_factory = None
                    rows = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs").fetchall()
                self._mirror = {row[0]: row for row in rows}
            self._watchers = [*self._watchers, listener]
            return list(self._mirror.values())

    def unwatch(self, listener: Callable[[list[Row]], object]) -> None:
        """Stop calling ``listener`` (at once: it never waits for a commit)."""
        # A new list, not a change to the one a commit may be iterating.
        self._watchers = [known for known in self._watchers if known != listener]
        if not self._watchers:
            self._mirror = {}

    def _notify(self, changes: list[_Change]) -> None:
        """Bring the mirror up to the commit of ``changes`` and tell the watchers."""
        if not changes or not self._watchers:
            return
        mirror = self._mirror
        changed: dict[str, Row] = {}
        for key, kind, values in changes:
            # An update's row is in the mirror: watch() read them all, under _order.
            row = list(_EMPTY if kind is _INSERT else mirror[key])
            for name, value in values.items():
                i = _INDEX[name]
                row[i] = row[i] + 1 if value is _INCREMENT else value
            mirror[key] = changed[key] = tuple(row)
        rows = list(changed.values())
        for listener in self._watchers:
            listener(rows)

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the journal and give up its lock (safe to call twice)."""
        try:
            with self._lock:
                self._conn.close()
            with self._read_lock:
                self._reader.close()
        finally:
            if self._owner is not None:
                self._owner.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, batch={self.batch!r})"

    # -- writes -------------------------------------------------------------

    def add(self, jobs: Iterable[NewJob]) -> int:
        """Record new jobs in one transaction; keys already present are left alone.

        Returns how many rows were inserted.
        """
        with self._batch() as batch:
            return batch.add(jobs)

    def record_intent(
        self,
        key: str,
        *,
        lease_id: str,
        body: dict[str, Any],
        sent_at: float,
        owner: str | None = None,
        digest: str | None = None,
    ) -> None:
        """Commit the intent to create (call it before the request is sent);
        ``digest`` identifies the request as submitted (to notice later edits)."""
        with self._batch() as batch:
            batch.record_intent(
                key, lease_id=lease_id, body=body, sent_at=sent_at, owner=owner, digest=digest
            )

    def restart(
        self, key: str, *, request: dict[str, Any], kind: str, family: str, reason: str
    ) -> None:
        """Make ``key`` a job never sent, with ``request``: its next run creates it
        anew (``--redo-changed``, ``--retry-failed``). What it had (generation id,
        file, failure) is forgotten; the file on disk stays until replaced."""
        with self._batch() as batch:
            batch.restart(key, request=request, kind=kind, family=family, reason=reason)

    def clear_intent(self, key: str, *, state: str = "queued", reason: str | None = None) -> None:
        """The create surely did not happen (refused, 429, 4xx): forget the intent."""
        with self._batch() as batch:
            batch.clear_intent(key, state=state, reason=reason)

    def record_submitted(self, key: str, generation_id: str, *, at: float | None = None) -> None:
        """The server returned (or reconcile found) the generation id."""
        with self._batch() as batch:
            batch.record_submitted(key, generation_id, at=at)

    def update(self, key: str, **fields: Any) -> None:
        """Set columns of one job (``generation`` and ``request`` as dicts)."""
        self.update_many([(key, fields)])

    def update_many(self, changes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Apply many ``(key, {column: value})`` changes in one transaction."""
        with self._batch() as batch:
            batch.update_many(changes)

    def apply(self, writes: Sequence[Write]) -> list[Exception | None]:
        """Run ``writes`` in order in one transaction (one commit, one fsync).

        Returns, for each write, the exception it raised or ``None``; a write
        that raises leaves nothing behind, and the others are committed all
        the same. Raises only if the commit itself fails.
        """
        changes: list[_Change] = []
        with self._order:
            errors = self._apply(writes, changes)
            self._notify(changes)
        return errors

    def _apply(self, writes: Sequence[Write], changes: list[_Change]) -> list[Exception | None]:
        try:
            with self._tx() as cur:
                batch = JournalBatch(self, cur, changes)
                for write in writes:
                    write(batch)
            return [None] * len(writes)
        except StorageError:
            raise  # the disk, not a write: the next attempt would fail the same way
        except Exception as exc:
            if len(writes) == 1:
                del changes[:]  # rolled back: the watchers must not see them
                return [exc]
        # Rare: some write failed, so the transaction was rolled back. Apply them
        # again, each in a savepoint of its own, to commit all but the failures.
        errors: list[Exception | None] = []
        del changes[:]  # the rolled-back transaction's
        with self._tx() as cur:
            batch = JournalBatch(self, cur, changes)
            for write in writes:
                cur.execute("SAVEPOINT one_write")
                done = len(changes)
                try:
                    write(batch)
                except Exception as exc:
                    self._raise_storage(exc)
                    cur.execute("ROLLBACK TO one_write")
                    del changes[done:]
                    errors.append(exc)
                else:
                    errors.append(None)
                cur.execute("RELEASE one_write")
        return errors

    # -- reads --------------------------------------------------------------

    def get(self, key: str) -> JournalRecord | None:
        with self._read_lock:
            # fetchall: the statement is done at once, so no read stays open
            rows = self._reader.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchall()
        return JournalRecord.from_row(rows[0]) if rows else None

    def get_many(self, keys: Iterable[str]) -> list[JournalRecord]:
        """The records of those of ``keys`` the journal holds (in no set order)."""
        return [JournalRecord.from_row(row) for row in self._rows_of(keys)]

    def _rows_of(self, keys: Iterable[str]) -> list[sqlite3.Row]:
        wanted = list(keys)
        found: list[sqlite3.Row] = []
        for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found.extend(self._rows(f"SELECT * FROM jobs WHERE key IN ({marks})", chunk))
        return found

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            # fetchall: the statement is done at once, so no read stays open
            rows: list[sqlite3.Row] = self._reader.execute(sql, params).fetchall()
        return rows

    def owners_of(self, generation_id: str) -> list[str]:
        """The keys of the jobs that own a generation id (an upscale or audio job may
        share its source's id, if the server restarts the source generation)."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT key FROM jobs WHERE generation_id = ?", (generation_id,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    def records(
        self, *, unfinished: bool = False, batch_size: int = 500
    ) -> Iterator[JournalRecord]:
        """Every job in submission order (only unfinished ones if asked), read in pages."""
        sql = "SELECT * FROM jobs WHERE seq > ?"
        if unfinished:
            sql += f" AND state NOT IN {_FINISHED!r}"
        sql += " ORDER BY seq LIMIT ?"
        last = 0
        while True:
            with self._read_lock:
                rows = self._reader.execute(sql, (last, batch_size)).fetchall()
            if not rows:
                return
            for row in rows:
                yield JournalRecord.from_row(row)
            last = int(rows[-1]["seq"])

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT state, COUNT(*) FROM jobs GROUP BY state"
            ).fetchall()
        return {str(state): int(n) for state, n in rows}

    def __len__(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM jobs")

    def meta(self, name: str) -> str | None:
        """A value of the journal's ``meta`` table (e.g. ``claims_batch``)."""
        with self._read_lock:
            row = self._reader.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))


_KEPT_ON_RESTART = ("key", "seq", "priority", "depends_on", "attempts", "queued_at", "updated_at")
_FORGOTTEN_ON_RESTART = tuple(
    name
    for name in COLUMNS
    if name not in _KEPT_ON_RESTART and name not in ("kind", "request", "family", "state", "reason")
)
"""What ``restart`` sets to NULL (it sets the request and its state anew)."""

_INSERT_SQL = (
    "INSERT OR IGNORE INTO jobs (key, seq, kind, request, family, priority,"
    " depends_on, state, queued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Write = Callable[["JournalBatch"], object]
"""One write for ``Journal.apply``: a function of the open batch."""


class JournalBatch:
    """The journal's writes, inside a transaction that is open (see ``Journal.apply``)."""

    def __init__(
        self, journal: Journal, cur: sqlite3.Cursor, changes: list[_Change] | None = None
    ) -> None:
        self._journal = journal
        self._cur = cur
        self.changes: list[_Change] = [] if changes is None else changes
        """What this batch wrote, in order (see ``Journal._notify``)."""

    def add(self, jobs: Iterable[NewJob]) -> int:
        """See ``Journal.add``."""
        journal = self._journal
        now = time.time()
        inserted = 0
        for job in jobs:
            values = {
                "key": job.key,
                "seq": journal._next_seq,
                "kind": job.kind,
                "request": _dumps(job.request),
                "family": job.family,
                "priority": job.priority,
                "depends_on": _dumps(list(job.depends_on)),
                "state": job.state,
                "queued_at": job.queued_at,
                "updated_at": now,
            }
            self._cur.execute(_INSERT_SQL, tuple(values.values()))
            if self._cur.rowcount:
                self.changes.append((job.key, _INSERT, values))
                inserted += 1
                journal._next_seq += 1
        return inserted

    def record_intent(
        self,
        key: str,
        *,
        lease_id: str,
        body: dict[str, Any],
        sent_at: float,
        owner: str | None = None,
        digest: str | None = None,
    ) -> None:
        """See ``Journal.record_intent``."""
        self._update(
            key,
            {
                "attempts": _INCREMENT,
                "state": "creating",
                "reason": None,
                "generation_id": None,
                "lease_id": lease_id,
                "intent_body": _dumps(body),
                "intent_at": sent_at,
                "owner": owner,
                "request_digest": digest,
            },
        )

    def restart(
        self, key: str, *, request: dict[str, Any], kind: str, family: str, reason: str
    ) -> None:
        """See ``Journal.restart``."""
        self._update(
            key,
            {
                "state": "pending",
                "reason": reason,
                **dict.fromkeys(_FORGOTTEN_ON_RESTART),
                "request": _dumps(request),
                "kind": kind,
                "family": family,
            },
        )

    def clear_intent(self, key: str, *, state: str = "queued", reason: str | None = None) -> None:
        """See ``Journal.clear_intent``."""
        self._update(
            key,
            {
                "state": state,
                "reason": reason,
                "intent_body": None,
                "intent_at": None,
                "lease_id": None,
            },
        )

    def record_submitted(self, key: str, generation_id: str, *, at: float | None = None) -> None:
        """See ``Journal.record_submitted``."""
        self.update(
            key,
            state="submitted",
            reason=None,
            generation_id=generation_id,
            created_at=time.time() if at is None else at,
        )

    def update(self, key: str, **fields: Any) -> None:
        """See ``Journal.update``."""
        self._update(key, _stored(fields))

    def update_many(self, changes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """See ``Journal.update_many``."""
        for key, fields in changes:
            self.update(key, **fields)

    def _update(self, key: str, values: dict[str, Any]) -> None:
        """Set ``key``'s columns to ``values`` (as stored) and its ``updated_at``."""
        values["updated_at"] = time.time()
        increments = frozenset(name for name, value in values.items() if value is _INCREMENT)
        params = [value for value in values.values() if value is not _INCREMENT]
        params.append(key)
        self._cur.execute(_update_sql(tuple(values), increments), params)
        if self._cur.rowcount == 0:
            raise JournalError(f"{self._journal.path}: no job {key!r} in the journal")
        self.changes.append((key, None, values))
