"""The scheduler against a server that misbehaves: it ends each job with a reason,
never reports "completed" without the file, and journals only what a resume needs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lumasched import (
    DownloadError,
    GenerationTimeout,
    Journal,
    LumaClient,
    MissingAssetError,
    RetryPolicy,
    Scheduler,
    VideoRequest,
)
from lumasched._config import Settings
from tests import _broken_server
from tests._broken_server import ASSET, BrokenAPI

api = _broken_server.api


@pytest.fixture(autouse=True)
def quick_asset_rereads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lumasched.engine._following.ASSET_REREAD_DELAYS", (0.01, 0.02, 0.04))


@pytest_asyncio.fixture
async def client(api: BrokenAPI) -> AsyncIterator[LumaClient]:
    settings = Settings(api_key="k", base_url=api.base_url, request_deadline=2.0)
    async with LumaClient(settings=settings, retry=RetryPolicy.for_tests()) as c:
        yield c


def _request(mode: str) -> VideoRequest:
    return VideoRequest(f"a shot mode:{mode}", model="ray-flash-2")


async def test_completed_without_an_asset_fails_and_keeps_its_id(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """No asset URL after the re-reads: the job fails, its generation id stays journalled."""
    with Journal(tmp_path / "j.sqlite") as journal:
        async with Scheduler(client, journal=journal, out_dir=tmp_path / "out") as scheduler:
            job = scheduler.submit(_request("no-asset"), key="shot")
            with pytest.raises(MissingAssetError, match="completed without an asset"):
                await job
        record = journal.get("shot")
    assert record is not None and record.state == "failed"
    assert record.generation_id is not None and record.error_type == "MissingAssetError"
    assert api.gets[record.generation_id] >= 4, "read once, then re-read"
    assert not (tmp_path / "out" / "shot.mp4").exists()


async def test_a_late_asset_is_found_by_the_rereads(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """An asset URL that shows up a moment after 'completed' is downloaded."""
    async with Scheduler(client, out_dir=tmp_path) as scheduler:
        result = await scheduler.submit(_request("late-asset"), key="late")
    assert result.path is not None and Path(result.path).read_bytes() == ASSET


async def test_a_rerun_fetches_the_asset_that_was_missing(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """The failed job's generation is polled again by a later run, not created again."""
    with Journal(tmp_path / "j.sqlite") as journal:
        async with Scheduler(client, journal=journal, out_dir=tmp_path) as scheduler:
            job = scheduler.submit(_request("no-asset"), key="shot")
            with pytest.raises(MissingAssetError):
                await job
        assert job.generation_id is not None
        api.set_mode(job.generation_id, "ok")
        async with Scheduler(client, journal=journal, out_dir=tmp_path) as scheduler:
            result = await scheduler.submit(_request("no-asset"), key="shot")
    assert result.generation.id == job.generation_id
    assert Path(str(result.path)).read_bytes() == ASSET
    assert api.creates == 1


async def test_an_undocumented_state_is_polled_until_the_job_timeout(
    api: BrokenAPI, client: LumaClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """'paused' is warned about once and treated as running; the deadline fails the job."""
    caplog.set_level(logging.WARNING, logger="lumasched")
    with Journal(tmp_path / "j.sqlite") as journal:
        async with Scheduler(client, journal=journal, job_timeout=0.3) as scheduler:
            jobs = [scheduler.submit(_request("odd-state"), key=f"odd-{n}") for n in range(2)]
            for job in jobs:
                with pytest.raises(GenerationTimeout, match=r"no terminal state after 0\.3s"):
                    await job
            stats = await scheduler.limiter.statistics()
            assert stats[jobs[0].family].held == 0, "the slots are released"
        records = [journal.get(f"odd-{n}") for n in range(2)]
    assert all(r is not None and r.generation_id and r.state == "failed" for r in records)
    warnings = [r for r in caplog.records if "undocumented state 'paused'" in r.getMessage()]
    assert len(warnings) == 1


async def test_the_journal_keeps_what_a_resume_needs_not_the_payload(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """A generation answered with 300 KiB of extra fields is journalled in a few hundred bytes."""
    with Journal(tmp_path / "j.sqlite") as journal:
        async with Scheduler(client, journal=journal, out_dir=tmp_path) as scheduler:
            await scheduler.submit(_request("fat"), key="fat")
        record = journal.get("fat")
    assert record is not None and record.generation is not None
    assert set(record.generation) <= {
        "id",
        "state",
        "failure_reason",
        "created_at",
        "generation_type",
        "model",
        "assets",
    }
    assert record.generation["assets"]["video"].endswith(".mp4")
    assert len(str(record.generation)) < 1000


async def test_a_trickling_asset_is_bounded_by_the_job_timeout(
    api: BrokenAPI, client: LumaClient, tmp_path: Path
) -> None:
    """An asset that never finishes arriving fails its job at the job timeout."""
    async with Scheduler(client, out_dir=tmp_path, job_timeout=0.5) as scheduler:
        job = scheduler.submit(_request("trickle-asset"), key="slow")
        with pytest.raises(DownloadError, match=r"download not finished after 0\.5s"):
            await job
    assert not (tmp_path / "slow.mp4").exists()
