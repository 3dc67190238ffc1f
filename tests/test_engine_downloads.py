"""The scheduler's downloads: files in out_dir, cut transfers, no re-download of verified files."""

from __future__ import annotations

from pathlib import Path

from lumasched.api import ImageRequest, VideoRequest
from lumasched.engine.downloads import sha256_file
from lumasched.engine.jobs import JobState
from lumasched.store.journal import Journal
from tests._engine_fixtures import assert_within_limits, engine, scheduler_for


def _items() -> list[tuple[str, ImageRequest | VideoRequest]]:
    return [
        ("cat", ImageRequest("a cat on a mat")),
        ("dog", VideoRequest("a dog in the park")),
        ("owl", ImageRequest("an owl at night")),
        ("fox", VideoRequest("a fox in the snow")),
    ]


async def test_assets_land_in_out_dir_verified(tmp_path: Path) -> None:
    """Each completed job's asset is written as out/<key>.<ext>, sha256 and size recorded."""
    out = tmp_path / "out"
    with Journal(tmp_path / "j.db") as journal:
        async with engine(journal=journal, out_dir=out) as (emu, _, scheduler):
            jobs = [scheduler.submit(r, key=k) for k, r in _items()]
            results = {job.key: await job for job in jobs}
        assert_within_limits(emu)
        assert sorted(p.name for p in out.iterdir()) == ["cat.jpg", "dog.mp4", "fox.mp4", "owl.jpg"]
        for key, result in results.items():
            assert result.path is not None and Path(result.path).parent == out
            assert sha256_file(Path(result.path)) == result.sha256
            assert Path(result.path).stat().st_size == result.bytes
            assert result.timings.downloaded is not None
            record = journal.get(key)
            assert record is not None
            assert (record.state, record.path, record.sha256) == (
                "completed",
                result.path,
                result.sha256,
            )
        counters = scheduler.counters()
        assert counters.downloads == 4
        assert counters.bytes_downloaded == sum(r.bytes or 0 for r in results.values())


async def test_cut_downloads_finish_with_the_right_bytes(tmp_path: Path) -> None:
    """Transfers cut half way are resumed and end with the same bytes as an uncut download."""
    cut = tmp_path / "cut"
    whole = tmp_path / "whole"
    faults = {"cut_downloads": 0.7}
    async with engine(out_dir=cut, emulator_config={"faults": faults, "seed": 5}) as (
        emu,
        _,
        scheduler,
    ):
        jobs = [scheduler.submit(r, key=k) for k, r in _items()]
        results = [await job for job in jobs]
        assert emu.inspect.downloads_cut > 0
        emu.set_faults(cut_downloads=0.0)
        from lumasched.engine.downloads import Downloader

        downloader = Downloader(scheduler._client)
        for result in results:
            assert result.path is not None
            url = result.generation.asset_url
            assert url is not None
            again = await downloader.download(url, whole / Path(result.path).name)
            assert again.sha256 == result.sha256 == sha256_file(Path(result.path))


async def test_verified_files_are_not_downloaded_again(tmp_path: Path) -> None:
    """A rerun skips completed jobs whose files verify, and re-fetches only a changed file."""
    out = tmp_path / "out"
    with Journal(tmp_path / "j.db") as journal:
        async with engine(journal=journal, out_dir=out) as (emu, client, first):
            for key, request in _items():
                first.submit(request, key=key)
            await first.join()
            started = emu.inspect.downloads_started
            (out / "owl.jpg").write_bytes(b"tampered")

            second = scheduler_for(client, journal=journal, out_dir=out)
            async with second:
                jobs = [second.submit(r, key=k) for k, r in _items()]
                results = {job.key: await job for job in jobs}
            assert emu.inspect.creates_total == 4
            assert emu.inspect.downloads_started == started + 1
            assert all(job.state is JobState.COMPLETED for job in jobs)
            owl = results["owl"]
            assert owl.path is not None and sha256_file(Path(owl.path)) == owl.sha256
