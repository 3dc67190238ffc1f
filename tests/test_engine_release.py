"""Releasing ended jobs: the scheduler's table keeps only what it can still need."""

from __future__ import annotations

from pathlib import Path

import anyio

from lumasched.api import GenerationKeyframe, ImageRequest, Keyframes, VideoRequest
from lumasched.engine.jobs import JobEvent, JobState
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.store.journal import Journal
from tests._engine_fixtures import engine


async def test_ended_jobs_are_released_without_a_journal() -> None:
    """After a batch, the table is empty; handles keep their results; counters stay right."""
    async with engine(latency=0.05) as (_, _, scheduler):
        items = [(f"k{i}", ImageRequest(f"a cat number {i}")) for i in range(12)]
        jobs = [job async for job in scheduler.as_completed(items, max_pending=5)]
        await scheduler.join()
        await anyio.sleep(0)
        assert scheduler.jobs() == []
        assert scheduler.get("k3") is None
        assert all(job.state is JobState.COMPLETED for job in jobs)
        assert {(await job).key for job in jobs} == {k for k, _ in items}
        counts = scheduler.counters().families[Family.IMAGE]
        assert (counts.completed, counts.pending, counts.queued) == (12, 0, 0)


async def test_table_stays_bounded_by_the_unfinished_jobs() -> None:
    """Streaming 120 jobs with 6 pending at a time never holds many more than 6."""
    fast = Limits(image=FamilyLimits(concurrency=50, requests=1000, per_seconds=1.0))
    async with engine(latency=0.0, limits=fast, emu_limits=fast) as (_, _, scheduler):
        peak = 0

        def watch(event: JobEvent) -> None:
            nonlocal peak
            peak = max(peak, len(scheduler.jobs()))

        scheduler.add_listener(watch)
        items = ((f"k{i}", ImageRequest(f"a cat number {i}")) for i in range(120))
        done = [job async for job in scheduler.as_completed(items, max_pending=6)]
        assert len(done) == 120
        assert peak <= 12, peak


async def test_released_key_is_answered_from_the_journal(tmp_path: Path) -> None:
    """get() and submit() of a released key answer from the journal: same outcome,
    no second create, no second count."""
    with Journal(tmp_path / "j.db") as journal:
        async with engine(latency=0.05, journal=journal) as (emu, _, scheduler):
            first = scheduler.submit(ImageRequest("a cat on a mat"), key="cat")
            result = await first
            await scheduler.join()
            await scheduler._writes.flush()
            assert scheduler.jobs() == []
            got = scheduler.get("cat")
            assert got is not None and got is not first and got.done
            assert got.state is JobState.COMPLETED
            assert (await got).generation.id == result.generation.id
            again = scheduler.submit(ImageRequest("a cat on a mat"), key="cat")
            assert (await again).generation.id == result.generation.id
            assert emu.inspect.creates_total == 1
            assert scheduler.counters().families[Family.IMAGE].completed == 1


async def test_dependency_is_held_until_its_dependent_is_created() -> None:
    """Without a journal, a completed job that a waiting job refers to stays until that
    job has its generation id; then both are released."""
    async with engine(latency=0.1) as (_, _, scheduler):
        held_at_create: list[bool] = []
        video = scheduler.submit(VideoRequest("a teddy bear"), key="v")

        def watch(event: JobEvent) -> None:
            if event.key == "x" and event.new is JobState.CREATING:
                held_at_create.append(scheduler.get("v") is video)

        scheduler.add_listener(watch)
        extend = scheduler.submit(
            VideoRequest(
                "it walks away",
                keyframes=Keyframes(frame0=GenerationKeyframe(scheduler.ref(video))),
            ),
            key="x",
        )
        v, x = await video, await extend
        assert held_at_create == [True]
        assert x.generation.request is not None
        assert x.generation.request["keyframes"]["frame0"]["id"] == v.generation.id
        await anyio.sleep(0)
        assert scheduler.jobs() == []


async def test_dependent_of_a_released_job_resolves_it_from_the_journal(tmp_path: Path) -> None:
    """A job referring to a released one gets its generation id from the journal,
    without the released job being counted again."""
    with Journal(tmp_path / "j.db") as journal:
        async with engine(latency=0.05, journal=journal) as (emu, _, scheduler):
            v = await scheduler.submit(VideoRequest("a teddy bear"), key="v")
            await scheduler._writes.flush()
            assert scheduler.get("v") is not None and scheduler.jobs() == []
            extend = scheduler.submit(
                VideoRequest(
                    "it walks away", keyframes=Keyframes(frame0=GenerationKeyframe("job:v"))
                ),
                key="x",
            )
            x = await extend
        assert x.generation.request is not None
        assert x.generation.request["keyframes"]["frame0"]["id"] == v.generation.id
        assert emu.inspect.creates_total == 2
        assert scheduler.counters().families[Family.VIDEO].completed == 2


async def test_cancelled_job_is_kept_while_its_generation_holds_a_slot() -> None:
    """A cancelled job whose generation still runs stays until the slot is freed."""
    async with engine(latency=0.4) as (_, _, scheduler):
        job = scheduler.submit(VideoRequest("a teddy bear"), key="v")
        with anyio.fail_after(5):
            while job.state is not JobState.SUBMITTED:
                await anyio.sleep(0.01)
        assert job.cancel()
        assert scheduler.get("v") is job
        with anyio.fail_after(5):
            while scheduler.get("v") is not None:
                await anyio.sleep(0.02)
        stats = await scheduler.limiter.statistics()
        assert stats[Family.VIDEO].held == 0


async def test_handles_of_released_jobs_still_serve_as_dependencies() -> None:
    """Without a journal, ref(handle) and depends_on=[handle] of a released, completed
    job still work: the ref is its generation id."""
    async with engine(latency=0.05) as (emu, _, scheduler):
        video = scheduler.submit(VideoRequest("a teddy bear"), key="v")
        v = await video
        await anyio.sleep(0)
        assert scheduler.get("v") is None
        assert scheduler.ref(video) == v.generation.id
        extend = scheduler.submit(
            VideoRequest(
                "it walks away",
                keyframes=Keyframes(frame0=GenerationKeyframe(scheduler.ref(video))),
            ),
            key="x",
            depends_on=[video],
        )
        x = await extend
    assert x.generation.request is not None
    assert x.generation.request["keyframes"]["frame0"]["id"] == v.generation.id
    assert emu.inspect.creates_total == 2
