"""One owner per journal: an OS lock that a second opener (any process) runs into,
that readers ignore, and that a killed holder never leaves behind."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumasched.errors import JournalError, JournalLockedError
from lumasched.store.journal import Journal, NewJob

HOLD = """
import sys, time
from lumasched.store.journal import Journal
journal = Journal(sys.argv[1], batch="b")
print("holding", flush=True)
time.sleep(120)
"""


def test_second_journal_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """A second Journal on an open file raises JournalLockedError naming the holder."""
    path = tmp_path / "j.db"
    with Journal(path, batch="b") as journal:
        journal.add([NewJob("a", "image", {"prompt": "x"}, "image")])
        with pytest.raises(JournalLockedError) as info:
            Journal(path, batch="b")
        error = info.value
        assert isinstance(error, JournalError)
        assert error.pid == os.getpid()
        assert error.host == socket.gethostname()
        assert error.since is not None and abs(error.since - time.time()) < 60
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(error)
        # a reader needs no lock and sees what the owner committed
        with Journal(path, read_only=True) as reader:
            assert [r.key for r in reader.records()] == ["a"]
            with pytest.raises(JournalError, match="read-only"):
                reader.add([NewJob("b", "image", {"prompt": "y"}, "image")])
    with Journal(path, batch="b") as again:  # released on close
        assert len(again) == 1


@pytest.mark.slow
def test_other_process_holds_it_and_sigkill_never_blocks(tmp_path: Path) -> None:
    """A journal held by another process is refused with that process's pid; once that
    process is SIGKILLed the journal opens at once."""
    path = tmp_path / "j.db"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "holding"
            with pytest.raises(JournalLockedError) as info:
                Journal(path, batch="b")
            assert info.value.pid == child.pid
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            with Journal(path, batch="b") as journal:
                assert journal.batch == "b"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_journal_of_0_1_0_gains_the_digest_column(tmp_path: Path) -> None:
    """A journal written before request digests were kept opens (the column is added)
    and reads its old rows with no digest."""
    path = tmp_path / "old.db"
    with Journal(path, batch="b") as journal:
        journal.add([NewJob("a", "image", {"prompt": "x"}, "image")])
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN request_digest")
    with Journal(path, read_only=True) as reader:  # a reader copes without it too
        assert reader.get("a") is not None
    with Journal(path, batch="b") as journal:
        record = journal.get("a")
        assert record is not None and record.request_digest is None
        journal.record_intent("a", lease_id="l", body={"prompt": "x"}, sent_at=1.0, digest="d")
        record = journal.get("a")
        assert record is not None and record.request_digest == "d"
