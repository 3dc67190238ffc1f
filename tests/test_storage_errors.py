"""Disk problems are plain one-line errors: the journal, results.jsonl and downloads
(faults injected through SQLite's page limit and the file functions, so the tests
run anywhere)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from lumasched import Downloader, DownloadError, Journal, LumaClient, StorageError
from lumasched._config import Settings
from lumasched.store.journal import NewJob
from lumasched.store.results import ResultsWriter
from tests._broken_server import ASSET, BrokenAPI


def _fill_up(journal: Journal) -> None:
    """From now on the journal's file cannot grow: SQLite answers SQLITE_FULL."""
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_under_the_journal_is_a_storage_error(tmp_path: Path) -> None:
    """No space: a one-line StorageError naming the directory; what was committed stays."""
    with Journal(tmp_path / "j.sqlite", batch="b") as journal:
        journal.add([NewJob("first", "video", {"prompt": "x"}, "video")])
        _fill_up(journal)
        rows = [NewJob(f"k{n}", "video", {"prompt": "p" * 3000}, "video") for n in range(20)]
        with pytest.raises(StorageError) as caught:
            journal.add(rows)
        assert str(caught.value) == f"no space left on {tmp_path} (journal)"
        assert caught.value.what == "journal"
        with pytest.raises(StorageError):
            journal.apply([lambda batch: batch.add(rows)])
        journal.update("first", state="queued")  # an update in place still fits
    with Journal(tmp_path / "j.sqlite", batch="b") as journal:
        assert len(journal) == 1 and journal.get("first").state == "queued"  # type: ignore[union-attr]


def _line(key: str) -> dict[str, Any]:
    return {"id": key, "state": "completed", "path": f"{key}.mp4", "failure_reason": None}


def test_results_never_keep_a_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write cut short by a full disk is taken back whole, and raises StorageError."""
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(_line("a"))
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lumasched.store.results.os.write", half_then_full)
    with pytest.raises(StorageError, match=f"no space left on {tmp_path} \\(results\\)"):
        writer.write(_line("b"))
    assert path.read_text().splitlines() == [json.dumps(_line("a"), separators=(",", ":"))]
    monkeypatch.setattr("lumasched.store.results.os.write", real_write)
    writer.write(_line("b"))  # space freed: the same item is written in full
    writer.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b"]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[LumaClient]:
    async with BrokenAPI() as api:
        settings = Settings(api_key="k", base_url=api.base_url)
        async with LumaClient(settings=settings) as c:
            yield c


def _url(client: LumaClient) -> str:
    return f"{client.base_url}/asset/ok/gen-1.mp4"


async def test_a_directory_where_the_file_goes_fails_that_download(
    client: LumaClient, tmp_path: Path
) -> None:
    """A directory standing at the target: a DownloadError saying so, nothing raised past it."""
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(DownloadError, match=r"clip.mp4: a directory is in the way: .*clip.mp4$"):
        await Downloader(client).download(_url(client), tmp_path / "clip.mp4")


async def test_no_space_for_a_download_fails_it_in_one_line(
    client: LumaClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing the part file: 'no space left on DIR'; a later try succeeds."""

    class Full:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lumasched.engine.downloads._open_part", Full)
    target = tmp_path / "clip.mp4"
    with pytest.raises(DownloadError, match=f"clip.mp4: no space left on {tmp_path}$"):
        await Downloader(client).download(_url(client), target)
    monkeypatch.undo()
    result = await Downloader(client).download(_url(client), target)
    assert target.read_bytes() == ASSET and result.bytes == len(ASSET)


async def test_a_read_only_directory_fails_the_download_plainly(
    client: LumaClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EROFS when publishing the file: 'read-only file system: DIR'."""

    def read_only(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(src), None, str(dst))

    monkeypatch.setattr("lumasched.engine.downloads.os.replace", read_only)
    with pytest.raises(DownloadError, match=f"read-only file system: {tmp_path}$"):
        await Downloader(client).download(_url(client), tmp_path / "clip.mp4")


async def test_the_scheduler_stops_with_one_storage_error(
    client: LumaClient, tmp_path: Path
) -> None:
    """A journal that cannot grow: the scheduler leaves its block with one StorageError
    (not a tree of errors, nor the follow-on 'no job in the journal'), sending nothing
    it could not record."""
    from lumasched import Scheduler, VideoRequest

    with Journal(tmp_path / "j.sqlite") as journal:
        _fill_up(journal)
        with pytest.raises(StorageError, match=f"^no space left on {tmp_path} \\(journal\\)$"):
            async with Scheduler(client, journal=journal, out_dir=tmp_path) as scheduler:
                for n in range(20):
                    request = VideoRequest(f"{'a long prompt ' * 200} take {n}")
                    scheduler.submit(request, key=f"k{n}")
        assert len(journal) == 0
    assert client.stats.total_creates == 0


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, "no space left on /data/out"),
        (errno.EDQUOT, "no space left on /data/out"),
        (errno.EROFS, "read-only file system: /data/out"),
        (errno.EISDIR, "a directory is in the way: /data/out/a.mp4"),
        (errno.ENOTDIR, "a file is in the way of the directory /data/out"),
        (errno.EACCES, "permission denied: /data/out/a.mp4"),
        (errno.EPERM, "permission denied: /data/out/a.mp4"),
        (errno.EIO, "cannot write /data/out/a.mp4: Input/output error"),
    ],
)
def test_disk_errors_read_as_a_few_words(code: int, message: str) -> None:
    """Each OSError a write can meet is named plainly, with the place to look at."""
    from lumasched.store._storage import os_reason

    assert os_reason(OSError(code, os.strerror(code)), Path("/data/out/a.mp4")) == message
