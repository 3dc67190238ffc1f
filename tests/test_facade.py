"""Luma, the one object: journal on by default, errors at the right moment,
shutdown hands in-flight work to the journal, status and events, retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

import lumasched
from lumasched import ImageRequest, JobState, Luma, UpscaleRequest, VideoRequest
from lumasched.emulator import Emulator
from lumasched.errors import ConfigurationError, ValidationError
from lumasched.store.journal import Journal
from lumasched.store.retention import prune_out_dir
from tests._engine_fixtures import API_KEY, emulator


def _luma(emu: Emulator, out: Path, **options: object) -> Luma:
    return Luma(out, api_key=API_KEY, base_url=emu.base_url, **options)  # type: ignore[arg-type]


async def _readme_example(emu: Emulator, out: Path) -> list[lumasched.JobResult]:
    async with _luma(emu, out) as luma:
        video = luma.submit(VideoRequest("a teddy bear in a forest", model="ray-2"), key="bear")
        upscale = luma.submit(
            UpscaleRequest(generation_id=luma.ref(video), resolution="1080p"), key="bear-1080p"
        )
        return [await video, await upscale]


async def test_copied_example_run_twice_never_pays_twice(tmp_path: Path) -> None:
    """The README's example, run twice on one folder, creates each generation once."""
    async with emulator(latency=0.05) as emu:
        first = await _readme_example(emu, tmp_path)
        second = await _readme_example(emu, tmp_path)
    assert emu.inspect.creates_total == 2
    assert [r.generation.id for r in first] == [r.generation.id for r in second]
    assert all(Path(r.path or "").is_file() for r in second)
    assert (tmp_path / "journal.sqlite").is_file()


async def test_generate_without_key_is_keyed_by_content(tmp_path: Path) -> None:
    """The same request without a key is the same job: one create, one file."""
    request = ImageRequest("a fox in the snow", aspect_ratio="1:1")
    async with emulator(latency=0.02) as emu:
        async with _luma(emu, tmp_path) as luma:
            result = await luma.generate(request)
            again = await luma.generate(request)
            other = await luma.generate(ImageRequest("a fox in the rain"))
        async with _luma(emu, tmp_path) as luma:
            later = await luma.generate(request)
    assert result.key == Luma.key_for(request) and result.key.startswith("image-")
    assert again.generation.id == later.generation.id == result.generation.id
    assert other.key != result.key
    assert emu.inspect.creates_total == 2
    assert Path(result.path or "").read_bytes()


async def test_submit_raises_for_an_invalid_request(tmp_path: Path) -> None:
    """submit() refuses a bad request at once, naming the field; nothing is sent."""
    async with emulator() as emu, _luma(emu, tmp_path) as luma:
        with pytest.raises(ValidationError, match="aspect_ratio"):
            luma.submit(ImageRequest("a cat", aspect_ratio="2:1"), key="bad")
        assert luma.status("bad") is None
    assert emu.inspect.creates_total == 0


async def test_user_exception_leaves_as_itself(tmp_path: Path) -> None:
    """An exception from the caller's code is not wrapped in an ExceptionGroup."""
    async with emulator() as emu:
        with pytest.raises(LookupError) as caught:
            async with _luma(emu, tmp_path) as luma:
                luma.submit(ImageRequest("a cat"), key="cat")
                raise LookupError("mine")
    assert type(caught.value) is LookupError


def test_missing_api_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key, constructing Luma names the variable to set."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="LUMAAI_API_KEY"):
        Luma("out")


def test_api_key_never_in_repr(tmp_path: Path) -> None:
    """Luma's repr shows the folder, never the key."""
    luma = Luma(tmp_path, api_key=API_KEY, base_url="http://127.0.0.1:9")
    assert API_KEY not in repr(luma) and API_KEY not in repr(luma.client)


async def test_exit_defers_in_flight_work_and_next_start_resumes(tmp_path: Path) -> None:
    """Leaving hands queued and in-flight jobs to the journal; the next Luma finishes
    them without creating anything twice."""
    async with emulator(latency=0.6) as emu:
        with anyio.fail_after(10):
            async with _luma(emu, tmp_path) as luma:
                jobs = [luma.submit(VideoRequest(f"a dog {i}"), key=f"dog-{i}") for i in range(5)]
                while sum(job.generation_id is not None for job in jobs) < 3:
                    await anyio.sleep(0.01)
        assert not any(job.state is JobState.COMPLETED for job in jobs)
        with Journal(tmp_path / "journal.sqlite") as journal:
            states = journal.counts()
        assert states.get("completed", 0) == 0 and sum(states.values()) == 5
        async with _luma(emu, tmp_path, on_exit="wait") as luma:
            pass  # leaving with "wait" waits for the resumed jobs
        async with _luma(emu, tmp_path) as luma:
            results = [await luma.scheduler.get(f"dog-{i}") for i in range(5)]  # type: ignore[misc]
    assert emu.inspect.creates_total == 5
    assert all(Path(r.path or "").is_file() for r in results)


async def test_status_and_events_by_key(tmp_path: Path) -> None:
    """status() follows a job to completed; subscribe() sees its transitions."""
    async with emulator(latency=0.05) as emu, _luma(emu, tmp_path) as luma:
        seen: list[JobState] = []
        with luma.subscribe() as events:
            job = luma.submit(ImageRequest("an owl"), key="owl")
            assert luma.status("owl") in {JobState.QUEUED, JobState.CREATING}
            async for event in events:
                if event.key == "owl":
                    seen.append(event.new)
                if event.new is JobState.COMPLETED:
                    break
        await job
        assert luma.status("owl") is JobState.COMPLETED
        assert luma.status("nobody") is None
    assert seen[-1] is JobState.COMPLETED and JobState.SUBMITTED in seen


async def test_prune_keeps_the_journal_and_resubmit_downloads_again(tmp_path: Path) -> None:
    """prune() deletes old assets only; submitting a pruned key fetches its file again."""
    request = ImageRequest("a heron")
    async with emulator(latency=0.02) as emu:
        async with _luma(emu, tmp_path) as luma:
            result = await luma.generate(request, key="heron")
            path = Path(result.path or "")
            old = time.time() - 3600
            os.utime(path, (old, old))
            assert luma.prune(max_age=60) == [path]
            assert not path.exists() and (tmp_path / "journal.sqlite").exists()
        async with _luma(emu, tmp_path) as luma:
            again = await luma.generate(request, key="heron")
    assert Path(again.path or "").is_file() and again.sha256 == result.sha256
    assert emu.inspect.creates_total == 1


def test_prune_out_dir_by_count_and_age(tmp_path: Path) -> None:
    """The oldest assets beyond max_files go; run files and `keep` stay."""
    now = 1_000_000.0
    for i, name in enumerate(["a.jpg", "b.jpg", "c.mp4", "journal.sqlite", "results.jsonl"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - i * 10, now - i * 10))
    removed = prune_out_dir(tmp_path, max_files=1, keep={"c.mp4"}, now=now)
    assert sorted(p.name for p in removed) == ["b.jpg"]
    assert prune_out_dir(tmp_path, max_age=5, now=now) == [tmp_path / "c.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.jpg",
        "journal.sqlite",
        "results.jsonl",
    ]
    with pytest.raises(ValueError, match="max_age"):
        prune_out_dir(tmp_path, max_age=-1)


async def test_job_is_shaped_like_a_future(tmp_path: Path) -> None:
    """done(), cancelled(), exception() and done callbacks behave as on asyncio futures."""
    async with emulator(latency=0.05) as emu, _luma(emu, tmp_path) as luma:
        job = luma.submit(ImageRequest("a lynx"), key="lynx")
        called: list[str] = []
        job.add_done_callback(lambda j: called.append(j.key))
        assert job.done() is False and not job.done
        with pytest.raises(Exception, match="not done"):
            job.exception()
        await job
        assert job.done() is True and job.done and job.done == True  # noqa: E712
        assert job.exception() is None and not job.cancelled()
        assert called == ["lynx"]
        queued = luma.submit(VideoRequest("a wolf"), key="wolf")
        queued.cancel()
        assert queued.cancelled() and isinstance(queued.exception(), lumasched.JobCancelled)
