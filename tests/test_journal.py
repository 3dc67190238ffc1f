"""The SQLite journal: schema, batch identity, intent/id ordering, paging."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from lumasched.errors import JournalError
from lumasched.store.journal import SCHEMA_VERSION, Journal, JournalRecord, NewJob, Row


def _job(key: str, **kw: object) -> NewJob:
    return NewJob(key=key, kind="image", request={"prompt": key}, family="image", **kw)  # type: ignore[arg-type]


def test_add_is_idempotent_per_key(tmp_path: Path) -> None:
    """Adding a key twice keeps the first row and reports only new inserts."""
    with Journal(tmp_path / "j.db") as journal:
        assert journal.add([_job("a"), _job("b")]) == 2
        assert journal.add([_job("a"), _job("c")]) == 1
        assert [r.key for r in journal.records()] == ["a", "b", "c"]
        assert journal.get("a") is not None and journal.get("a").request == {"prompt": "a"}  # type: ignore[union-attr]


def test_intent_then_id_survive_reopen(tmp_path: Path) -> None:
    """An intent and then a generation id are durable across close/reopen."""
    path = tmp_path / "j.db"
    sent = time.time()
    with Journal(path) as journal:
        journal.add([_job("a")])
        journal.record_intent("a", lease_id="L1", body={"prompt": "a"}, sent_at=sent, owner="h:1")
    with Journal(path) as journal:
        rec = journal.get("a")
        assert rec is not None
        assert (rec.state, rec.attempts, rec.intent_body, rec.intent_at) == (
            "creating",
            1,
            {"prompt": "a"},
            sent,
        )
        assert rec.generation_id is None
        journal.record_submitted("a", "gen-1")
    with Journal(path) as journal:
        rec = journal.get("a")
        assert rec is not None and rec.state == "submitted" and rec.generation_id == "gen-1"
        assert journal.owners_of("gen-1") == ["a"]


def test_clear_intent_forgets_body(tmp_path: Path) -> None:
    """A create that surely did not happen leaves no intent behind."""
    with Journal(tmp_path / "j.db") as journal:
        journal.add([_job("a")])
        journal.record_intent("a", lease_id="L", body={"p": 1}, sent_at=1.0)
        journal.clear_intent("a", state="queued", reason="rate_limited")
        rec = journal.get("a")
        assert rec is not None
        assert (rec.state, rec.reason, rec.intent_body, rec.attempts) == (
            "queued",
            "rate_limited",
            None,
            1,
        )


def test_batch_mismatch_is_refused(tmp_path: Path) -> None:
    """A journal written for one batch refuses to open for another."""
    path = tmp_path / "j.db"
    Journal(path, batch="one").close()
    Journal(path, batch="one").close()
    Journal(path).close()
    with pytest.raises(JournalError, match="belongs to batch 'one'"):
        Journal(path, batch="two")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A journal from a newer lumasched (another schema version) is refused."""
    path = tmp_path / "j.db"
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="schema"):
        Journal(path)


def test_garbage_file_is_a_journal_error(tmp_path: Path) -> None:
    """A file that is not SQLite raises JournalError, not sqlite3's error."""
    path = tmp_path / "j.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError):
        Journal(path)


def test_update_unknown_key_or_column(tmp_path: Path) -> None:
    """Updating a missing job or a non-column fails loudly."""
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(JournalError, match="no job"):
            journal.update("nope", state="failed")
        journal.add([_job("a")])
        with pytest.raises(ValueError, match="not journal columns"):
            journal.update("a", owner="x")


def test_unfinished_records_paged_in_order(tmp_path: Path) -> None:
    """records(unfinished=True) pages through unfinished jobs in submission order."""
    with Journal(tmp_path / "j.db") as journal:
        journal.add([_job(f"k{i:04d}") for i in range(1200)])
        for i in range(0, 1200, 3):
            journal.update(f"k{i:04d}", state="completed")
        keys = [r.key for r in journal.records(unfinished=True, batch_size=100)]
        assert len(keys) == 800
        assert keys == sorted(keys)
        assert journal.counts() == {"completed": 400, "pending": 800}
        assert len(journal) == 1200


def test_bulk_add_is_fast(tmp_path: Path) -> None:
    """Recording 20k new jobs is one transaction, well under a second."""
    with Journal(tmp_path / "j.db") as journal:
        started = time.perf_counter()
        journal.add([_job(f"k{i}") for i in range(20_000)])
        assert time.perf_counter() - started < 2.0
        assert journal.get("k19999") is not None


def test_wal_mode(tmp_path: Path) -> None:
    """The journal runs in WAL mode."""
    with Journal(tmp_path / "j.db") as journal:
        assert journal._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_apply_commits_writes_together_and_isolates_a_failure(tmp_path: Path) -> None:
    """apply() runs writes in one transaction; a failing write is undone alone."""
    with Journal(tmp_path / "j.db") as journal:
        errors = journal.apply(
            [
                lambda b: b.add([_job("a"), _job("b")]),
                lambda b: b.record_intent("a", lease_id="L", body={"p": 1}, sent_at=1.0),
                lambda b: b.update("missing", state="failed"),
                lambda b: b.record_submitted("b", "gen-b"),
            ]
        )
        assert [type(e).__name__ if e else None for e in errors] == [
            None,
            None,
            "JournalError",
            None,
        ]
        a, b = journal.get("a"), journal.get("b")
        assert a is not None and a.state == "creating" and a.intent_body == {"p": 1}
        assert b is not None and b.generation_id == "gen-b"


def test_watchers_get_each_commit_rows_as_on_disk(tmp_path: Path) -> None:
    """A watcher gets every row a commit changed, as committed (made from what was
    written, not read back); a write undone (half done, then failing) hands over
    nothing, and a row added before watch() began is updated all the same."""
    seen: dict[str, Row] = {}

    def watcher(rows: list[Row]) -> None:
        seen.update((row[0], row) for row in rows)

    with Journal(tmp_path / "j.db") as journal:
        journal.add([_job("old")])
        seen.update((row[0], row) for row in journal.watch(watcher))
        journal.add([_job("a"), _job("b", depends_on=("old",), priority=3)])
        journal.add([_job("a")])  # ignored: already there
        journal.restart("old", request={"prompt": "new"}, kind="image", family="image", reason="x")
        errors = journal.apply(
            [
                lambda b: b.record_intent("a", lease_id="L", body={"p": 1}, sent_at=1.0),
                # changes "b", then fails: rolled back, so "b" must stay as it was
                lambda b: b.update_many([("b", {"error_type": "X"}), ("missing", {})]),
                lambda b: b.record_intent("a", lease_id="M", body={"p": 2}, sent_at=2.0),
                lambda b: b.clear_intent("a", state="queued", reason="429"),
                lambda b: b.record_submitted("b", "gen-b", at=5),
                lambda b: b.update("b", generation={"id": "gen-b"}, bytes=7),
            ]
        )
        assert [e is None for e in errors] == [True, False, True, True, True, True]
        on_disk = {r.key: r for r in journal.get_many(["a", "b", "old"])}
        assert {k: JournalRecord.from_row(row) for k, row in seen.items()} == on_disk
        assert on_disk["a"].attempts == 2 and on_disk["a"].reason == "429"
        assert on_disk["b"].error_type is None and on_disk["b"].generation == {"id": "gen-b"}
        assert on_disk["old"].request == {"prompt": "new"}


def test_a_lone_write_that_fails_halfway_hands_its_watchers_nothing(tmp_path: Path) -> None:
    """One write alone in its commit that changes a row and then fails is rolled
    back whole: the watcher's copy stays what the disk holds."""
    seen: dict[str, Row] = {}

    def watcher(rows: list[Row]) -> None:
        seen.update((row[0], row) for row in rows)

    with Journal(tmp_path / "j.db") as journal:
        journal.add([_job("a")])
        seen.update((row[0], row) for row in journal.watch(watcher))
        before = dict(seen)
        errors = journal.apply(
            [lambda b: b.update_many([("a", {"error_type": "X"}), ("missing", {})])]
        )
        assert isinstance(errors[0], JournalError)
        assert seen == before
        assert JournalRecord.from_row(seen["a"]) == journal.get("a")


def test_read_does_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    """get() answers (the last commit) while another thread holds a write transaction."""
    import threading

    with Journal(tmp_path / "j.db") as journal:
        journal.add([_job("a")])
        inside, release = threading.Event(), threading.Event()

        def slow_write() -> None:
            with journal._tx() as cur:
                cur.execute("UPDATE jobs SET state = 'failed' WHERE key = 'a'")
                inside.set()
                release.wait(5)

        writer = threading.Thread(target=slow_write)
        writer.start()
        try:
            assert inside.wait(5)
            started = time.perf_counter()
            record = journal.get("a")
            assert time.perf_counter() - started < 1.0
            assert record is not None and record.state == "pending"  # not yet committed
        finally:
            release.set()
            writer.join()
        assert journal.get("a").state == "failed"  # type: ignore[union-attr]
