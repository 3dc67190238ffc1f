"""The journal and results.jsonl are never touched on an event-loop thread: every
SQLite statement, fsync and results write of a real run happens in a worker thread."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lumasched import cli
from lumasched.api import ImageRequest, request_to_dict
from lumasched.store.journal import Journal, NewJob
from tests import _cli_fixtures as fx
from tests._cli_fixtures import MIXED_ITEMS, ThreadedEmulator, write_jsonl
from tests._engine_fixtures import engine
from tests._redis_fixtures import RedisServer, redis_process

emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file
__all__ = ["redis_process"]


class LoopThreadWatch:
    """Records every SQLite statement, fsync and results.jsonl write made on a thread
    where an asyncio event loop is running (other than ``ignore``'s)."""

    def __init__(self, ignore: set[int]) -> None:
        self.ignore = ignore
        self.offences: list[str] = []

    def check(self, what: str) -> None:
        if threading.get_ident() in self.ignore:
            return
        if asyncio._get_running_loop() is not None:
            stack = "".join(traceback.format_stack(limit=8)[:-2])
            self.offences.append(f"{what} on the event loop\n{stack}")


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LoopThreadWatch]]:
    watches: list[LoopThreadWatch] = []

    def install(ignore: set[int] = frozenset()) -> LoopThreadWatch:  # type: ignore[assignment]
        watch = LoopThreadWatch(set(ignore))
        connect, fsync, write = sqlite3.connect, os.fsync, os.write

        def watched_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            watch.check("sqlite3.connect")
            conn = connect(*args, **kwargs)
            # Called for every statement, in the thread that runs it.
            conn.set_trace_callback(lambda sql: watch.check(f"SQLite {sql.split()[0]}"))
            return conn

        def watched_fsync(fd: Any) -> None:
            watch.check("os.fsync")
            fsync(fd)

        def watched_write(fd: int, data: Any) -> int:
            if _path_of(fd).endswith("results.jsonl"):
                watch.check("a write of results.jsonl")
            return write(fd, data)

        monkeypatch.setattr(sqlite3, "connect", watched_connect)
        monkeypatch.setattr(os, "fsync", watched_fsync)
        monkeypatch.setattr(os, "write", watched_write)
        watches.append(watch)
        return watch

    yield install


def test_watch_sees_sqlite_on_the_loop(
    watch: Callable[..., LoopThreadWatch], tmp_path: Path
) -> None:
    """The checker itself: a journal opened and written on a loop is caught."""
    seen = watch()

    async def on_the_loop() -> None:
        with Journal(tmp_path / "j.sqlite") as journal:
            journal.add([NewJob("a", "image", {"prompt": "x"}, "image")])

    asyncio.run(on_the_loop())
    assert any(offence.startswith("SQLite INSERT") for offence in seen.offences)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name files")
def test_cli_runs_touch_journal_and_results_off_the_loop(
    watch: Callable[..., LoopThreadWatch],
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
) -> None:
    """A run and its rerun (resuming every item from the journal) keep SQLite, fsync
    and results.jsonl off the event-loop thread."""
    seen = watch(ignore={cli_env._thread.ident})
    manifest = write_jsonl(tmp_path / "mixed.jsonl", MIXED_ITEMS)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file), "--no-progress"]
    assert cli.main(args) == 0
    (out / "bear.mp4").unlink()  # the rerun verifies every file and fetches this one again
    assert cli.main(args) == 0
    assert (out / "bear.mp4").is_file()
    assert seen.offences == []


@pytest.mark.redis
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name files")
def test_redis_runs_touch_journal_off_the_loop(
    watch: Callable[..., LoopThreadWatch],
    cli_env: ThreadedEmulator,
    redis_process: RedisServer,
    limits_file: Path,
    tmp_path: Path,
) -> None:
    """A ``--redis`` run (joining the batch's claims writes the epoch and sites to
    the journal) and its rerun keep SQLite, fsync and results.jsonl off the loop."""
    seen = watch(ignore={cli_env._thread.ident})
    manifest = write_jsonl(tmp_path / "mixed.jsonl", MIXED_ITEMS)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file)]
    args += ["--no-progress", "--redis", redis_process.url]
    assert cli.main(args) == 0
    redis_process.stop()
    redis_process.start()  # a new, empty state: the rerun joins and re-seeds it
    assert cli.main(args) == 0
    with Journal(out / "journal.sqlite", read_only=True) as reader:
        assert reader.meta("claims_epoch") is not None
    assert seen.offences == []


async def test_submitting_journalled_keys_stays_off_the_loop(
    watch: Callable[..., LoopThreadWatch], tmp_path: Path
) -> None:
    """Submitting keys the journal holds (never sent, so their request is rewritten)
    and resuming read and write the journal only in worker threads."""
    path = tmp_path / "j.sqlite"
    old = {"prompt": "old", "model": "photon-flash-1"}
    with Journal(path) as journal:
        journal.add([NewJob(f"k{n}", "image", old, "image") for n in range(6)])
    seen = watch()
    journal = await asyncio.to_thread(Journal, path)
    try:
        async with engine(journal=journal, out_dir=tmp_path / "out") as (_, _, scheduler):
            jobs = [scheduler.submit(ImageRequest(f"new {n}"), key=f"k{n}") for n in range(6)]
            assert scheduler.resume() == []  # every unfinished key is held already
            for job in jobs:
                await job.result()
            assert scheduler.get("k0") is not None
    finally:
        await asyncio.to_thread(journal.close)
    assert seen.offences == []
    with Journal(path, read_only=True) as reader:
        records = list(reader.records())
    assert {r.state for r in records} == {"completed"}
    assert {r.request["prompt"] for r in records} == {f"new {n}" for n in range(6)}


async def test_scheduler_sees_rows_written_beside_it(tmp_path: Path) -> None:
    """A row written straight to the journal while the scheduler runs (as the CLI
    seeds what other hosts did) answers a later submit of its key."""
    journal = await asyncio.to_thread(Journal, tmp_path / "j.sqlite")
    request = ImageRequest("a pond")
    try:
        async with engine(journal=journal) as (emu, _, scheduler):

            def seed() -> None:
                body = request_to_dict(request)
                journal.add([NewJob("elsewhere", request.kind, body, "image")])
                journal.update(
                    "elsewhere",
                    state="failed",
                    error_type="GenerationFailed",
                    reason="failed on another host",
                    generation_id="gen-elsewhere",
                )

            await asyncio.to_thread(seed)
            job = scheduler.submit(request, key="elsewhere")
            assert job.done and job.generation_id == "gen-elsewhere"
            assert "failed on another host" in str(job.error)
        assert emu.inspect.creates_total == 0
    finally:
        await asyncio.to_thread(journal.close)
