"""Downloads against a fake asset host: resume, restart, refresh, verify, atomicity."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from lumasched.engine.downloads import (
    Downloader,
    download_asset,
    part_path,
    safe_target,
    sha256_file,
)
from lumasched.errors import DownloadError
from tests._download_fixtures import FakeAssetClient, pattern

URL = "https://assets.example/gen-1/video.mp4"
DATA = pattern(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def make(client: FakeAssetClient, **kwargs: object) -> Downloader:
    return Downloader(client, backoff=0.0, chunk_size=16_384, **kwargs)  # type: ignore[arg-type]


async def test_download_writes_the_file_and_its_sha256(tmp_path: Path) -> None:
    """A plain download lands at the target with the right bytes and sha256, no part file left."""
    client = FakeAssetClient({URL: DATA})
    target = tmp_path / "out" / "job-1.mp4"
    result = await make(client).download(URL, target)
    assert target.read_bytes() == DATA
    assert (result.path, result.sha256, result.bytes) == (target, SHA, len(DATA))
    assert not part_path(target).exists()


async def test_a_cut_download_resumes_with_range(tmp_path: Path) -> None:
    """A body cut half way is finished by a Range request for the rest."""
    client = FakeAssetClient({URL: DATA})
    client.cuts = [120_000]
    downloader = make(client)
    result = await downloader.download(URL, tmp_path / "a.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == DATA and result.sha256 == SHA
    assert client.requests == [(URL, 0), (URL, 120_000)]
    assert downloader.stats().resumes == 1


async def test_a_short_body_without_an_error_is_resumed(tmp_path: Path) -> None:
    """A body shorter than its Content-Length is not accepted: the rest is fetched."""
    client = FakeAssetClient({URL: DATA})

    async def short_then_whole(offset: int, size: int) -> AsyncIterator[bytes]:
        if offset == 0 and len(client.requests) == 1:
            yield DATA[:1000]
            return
        for i in range(offset, len(DATA), size):
            yield DATA[i : i + size]

    client.streams[URL] = (len(DATA), short_then_whole)
    await make(client).download(URL, tmp_path / "a.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == DATA
    assert client.requests == [(URL, 0), (URL, 1000)]


async def test_a_server_that_ignores_range_is_restarted_cleanly(tmp_path: Path) -> None:
    """When a resume gets 200 (whole file), the part file starts over instead of growing."""
    client = FakeAssetClient({URL: DATA})
    client.cuts = [100_000]
    client.ignore_range = True
    downloader = make(client)
    result = await downloader.download(URL, tmp_path / "a.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == DATA and result.bytes == len(DATA)
    assert downloader.stats().restarts == 1


async def test_an_expired_url_is_refreshed(tmp_path: Path) -> None:
    """403 on an old URL asks refresh_url() for a fresh one, then completes."""
    fresh = URL + "?sig=new"
    client = FakeAssetClient({URL: DATA, fresh: DATA})
    client.expired.add(URL)
    calls = 0

    async def refresh() -> str:
        nonlocal calls
        calls += 1
        return fresh

    downloader = make(client)
    await downloader.download(URL, tmp_path / "a.mp4", refresh_url=refresh)
    assert (tmp_path / "a.mp4").read_bytes() == DATA
    assert calls == 1 and downloader.stats().refreshes == 1


async def test_a_cut_then_expired_download_resumes_on_the_fresh_url(tmp_path: Path) -> None:
    """Cut, then the URL expires: the fresh URL is asked only for the missing bytes."""
    fresh = URL + "?sig=new"
    client = FakeAssetClient({URL: DATA, fresh: DATA})
    client.cuts = [50_000]

    async def refresh() -> str:
        return fresh

    async def expire_after_cut(offset: int, size: int) -> AsyncIterator[bytes]:
        client.expired.add(URL)
        for i in range(offset, len(DATA), size):
            yield DATA[i : i + size]

    client.streams[URL] = (len(DATA), expire_after_cut)
    await make(client).download(URL, tmp_path / "a.mp4", refresh_url=refresh)
    assert (tmp_path / "a.mp4").read_bytes() == DATA
    assert client.requests == [(URL, 0), (URL, 50_000), (fresh, 50_000)]


async def test_an_expired_url_without_refresh_fails(tmp_path: Path) -> None:
    """Without refresh_url, an expired URL is a DownloadError, and no target appears."""
    client = FakeAssetClient({URL: DATA})
    client.expired.add(URL)
    with pytest.raises(DownloadError, match="403"):
        await make(client).download(URL, tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()


async def test_a_matching_target_is_not_downloaded_again(tmp_path: Path) -> None:
    """A target already on disk with the expected sha256 is kept, with no request."""
    target = tmp_path / "a.mp4"
    target.write_bytes(DATA)
    client = FakeAssetClient({URL: DATA})
    result = await make(client).download(URL, target, expected_sha256=SHA.upper())
    assert result.skipped and result.bytes == len(DATA)
    assert client.requests == []


async def test_a_stale_target_is_replaced(tmp_path: Path) -> None:
    """A target with other bytes than expected is downloaded again and replaced whole."""
    target = tmp_path / "a.mp4"
    target.write_bytes(b"old")
    client = FakeAssetClient({URL: DATA})
    result = await make(client).download(URL, target, expected_sha256=SHA)
    assert not result.skipped and target.read_bytes() == DATA


async def test_a_checksum_mismatch_fails_and_leaves_nothing(tmp_path: Path) -> None:
    """Bytes that do not hash to expected_sha256 raise DownloadError; no target, no part."""
    client = FakeAssetClient({URL: DATA})
    target = tmp_path / "a.mp4"
    with pytest.raises(DownloadError, match="does not match"):
        await make(client).download(URL, target, expected_sha256="0" * 64)
    assert not target.exists() and not part_path(target).exists()


async def test_a_leftover_part_of_other_bytes_is_downloaded_again(tmp_path: Path) -> None:
    """A stale .part that does not verify is thrown away once and the asset fetched whole."""
    target = tmp_path / "a.mp4"
    part_path(target).write_bytes(b"x" * 1000)
    client = FakeAssetClient({URL: DATA})
    result = await make(client).download(URL, target, expected_sha256=SHA)
    assert target.read_bytes() == DATA and result.sha256 == SHA
    assert client.requests == [(URL, 1000), (URL, 0)]


async def test_two_downloads_of_one_target_take_turns(tmp_path: Path) -> None:
    """Concurrent downloads to the same target never share the part file."""
    client = FakeAssetClient({URL: DATA})
    downloader = make(client, max_concurrent=4)
    target = tmp_path / "a.mp4"
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(downloader.download, URL, target)
    assert target.read_bytes() == DATA
    assert client.peak_open == 1


async def test_persistent_server_errors_give_up_after_attempts(tmp_path: Path) -> None:
    """Five 503s in a row raise DownloadError; the target never appears."""
    client = FakeAssetClient({URL: DATA})
    client.statuses = [503] * 10
    with pytest.raises(DownloadError, match="5 attempts"):
        await make(client, attempts=5).download(URL, tmp_path / "a.mp4")
    assert len(client.requests) == 5
    assert not (tmp_path / "a.mp4").exists()


async def test_transient_errors_are_retried(tmp_path: Path) -> None:
    """A 502 and a 429 before a good answer still give the right file."""
    client = FakeAssetClient({URL: DATA})
    client.statuses = [502, 429]
    await make(client).download(URL, tmp_path / "a.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == DATA


async def test_cancelled_download_leaves_no_target_and_resumes_later(tmp_path: Path) -> None:
    """Cancelling mid-body leaves only the part file; the next download resumes from it."""
    client = FakeAssetClient({URL: DATA})
    reached = anyio.Event()

    async def stalls(offset: int, size: int) -> AsyncIterator[bytes]:
        yield DATA[:size]
        yield DATA[size : 2 * size]
        reached.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    client.streams[URL] = (len(DATA), stalls)
    target = tmp_path / "a.mp4"
    downloader = make(client)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(downloader.download, URL, target)
            await reached.wait()
            tg.cancel_scope.cancel()
    assert not target.exists()
    assert part_path(target).read_bytes() == DATA[: 2 * 16_384]
    del client.streams[URL]
    result = await downloader.download(URL, target)
    assert target.read_bytes() == DATA and result.sha256 == SHA
    assert client.requests[-1] == (URL, 2 * 16_384)
    assert not part_path(target).exists()


async def test_small_files_finishing_together_share_one_folder_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies held in memory that finish together are sealed in one worker-thread
    call with one fsync of their folder; a file that cannot be written fails alone."""
    import lumasched.engine.downloads as downloads

    urls = {f"https://assets.example/gen-{i}/image.jpg": pattern(2_000 + i) for i in range(6)}
    client = FakeAssetClient(urls)
    downloader = make(client, max_concurrent=6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "item-3.jpg").mkdir()  # a folder in the way: the rename of item-3 fails
    batches: list[int] = []
    folder_syncs: list[Path] = []
    seal_many, sync_folder = downloads._seal_many, downloads._sync_folder

    def counted_seal_many(batch: list[downloads._Sealing]) -> None:
        batches.append(len(batch))
        seal_many(batch)

    def counted_sync_folder(path: Path) -> None:
        folder_syncs.append(path)
        sync_folder(path)

    monkeypatch.setattr(downloads, "_seal_many", counted_seal_many)
    monkeypatch.setattr(downloads, "_sync_folder", counted_sync_folder)
    results: dict[str, object] = {}

    async def one(i: int, url: str) -> None:
        try:
            results[f"item-{i}"] = await downloader.download(url, out / f"item-{i}.jpg")
        except DownloadError as exc:
            results[f"item-{i}"] = exc

    async with anyio.create_task_group() as tg:
        for i, url in enumerate(urls):
            tg.start_soon(one, i, url)
    assert sum(batches) == 6 and len(batches) < 6
    assert folder_syncs == [out] * len(batches)
    assert isinstance(results.pop("item-3"), DownloadError)
    for i, data in enumerate(urls.values()):
        if i != 3:
            assert (out / f"item-{i}.jpg").read_bytes() == data
            assert not part_path(out / f"item-{i}.jpg").exists()
    assert downloader.stats().downloads == 5


async def test_concurrency_is_bounded(tmp_path: Path) -> None:
    """With max_concurrent=2, no more than two bodies stream at once."""
    files = {f"https://assets.example/{i}.jpg": pattern(40_000, i) for i in range(6)}
    client = FakeAssetClient(files)
    downloader = make(client, max_concurrent=2)
    async with anyio.create_task_group() as tg:
        for i, url in enumerate(files):
            tg.start_soon(downloader.download, url, tmp_path / f"{i}.jpg")
    assert client.peak_open == 2
    assert all((tmp_path / f"{i}.jpg").read_bytes() == d for i, d in enumerate(files.values()))


async def test_memory_stays_flat_for_a_large_asset(tmp_path: Path) -> None:
    """A 48 MB asset streams through with well under 2 MB of Python allocations."""
    size = 48 * 1024 * 1024
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    async def body(offset: int, chunk: int) -> AsyncIterator[bytes]:
        assert offset == 0
        for _ in range(size // len(block)):
            yield block

    client = FakeAssetClient()
    client.streams[URL] = (size, body)
    tracemalloc.start()
    try:
        result = await download_asset(client, URL, tmp_path / "big.mp4", chunk_size=len(block))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.bytes == size and result.sha256 == expected.hexdigest()
    assert peak < 2 * 1024 * 1024


def test_safe_target_keeps_names_inside_the_output_directory(tmp_path: Path) -> None:
    """Job ids become file names; anything that could escape out_dir is refused."""
    assert safe_target(tmp_path, "job-1", "mp4") == tmp_path / "job-1.mp4"
    assert safe_target(tmp_path, "a b (2)", ".jpg") == tmp_path / "a b (2).jpg"
    bad = ["", ".", "..", "../x", "a/b", "a\\b", "/etc/passwd", ".hidden", "a\x00b", "x" * 300]
    for name in bad:
        with pytest.raises(ValueError):
            safe_target(tmp_path, name, "mp4")
    with pytest.raises(ValueError):
        safe_target(tmp_path, "ok", "mp4/../../x")


def test_sha256_file_streams_a_file(tmp_path: Path) -> None:
    """sha256_file matches hashlib over the whole content."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert sha256_file(path) == SHA
