"""Stopping the scheduler abruptly: cancelled consumers, shutdown from another task,
the journal left consistent and the task group exited by the task that entered it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from lumasched.api import ImageRequest
from lumasched.engine.jobs import JobDeferred, JobEvent, JobState
from lumasched.engine.scheduler import Scheduler
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.store.journal import Journal
from tests._engine_fixtures import client_for, emulator, scheduler_for

TWO = Limits(image=FamilyLimits(concurrency=2, requests=10, per_seconds=1.0))


def _items(n: int) -> Iterator[tuple[str, ImageRequest]]:
    for i in range(n):
        yield f"k{i}", ImageRequest(f"a cat number {i}")


async def _wait_for_submitted(scheduler: Scheduler, count: int) -> None:
    """Until ``count`` jobs are submitted: their creates answered and their ids
    journalled. (The emulator counting a create says nothing of when its answer
    reaches the scheduler: on a busy machine it may still be on its way.)"""
    submitted: set[str] = set()
    reached = anyio.Event()

    def note(event: JobEvent) -> None:
        if event.new is JobState.SUBMITTED:
            submitted.add(event.key)
        if len(submitted) >= count:
            reached.set()

    remove = scheduler.add_listener(note)
    try:
        submitted.update(job.key for job in scheduler.jobs() if job.state is JobState.SUBMITTED)
        if len(submitted) >= count:
            return
        with anyio.fail_after(10):
            await reached.wait()
    finally:
        remove()


def _assert_in_flight_journalled(journal: Journal, scheduler: Scheduler) -> None:
    records = {record.key: record for record in journal.records()}
    in_flight = [job for job in scheduler.jobs() if job.generation_id is not None]
    assert len(in_flight) == 2
    for job in in_flight:
        assert records[job.key].state == "submitted"
        assert records[job.key].generation_id == job.generation_id
    assert journal.counts() == {"submitted": 2, "pending": 4}


async def test_cancelled_while_iterating_as_completed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer cancelled inside as_completed: the scheduler exits cleanly and journals all."""
    async with emulator(limits=TWO, latency=2.0) as emu, client_for(emu) as client:
        with Journal(tmp_path / "j.db") as journal:
            with anyio.CancelScope() as scope:
                async with scheduler_for(client, limits=TWO, journal=journal) as scheduler:

                    async def cancel_after_creates() -> None:
                        await _wait_for_submitted(scheduler, 2)
                        scope.cancel()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cancel_after_creates)
                        async for _ in scheduler.as_completed(_items(6)):
                            pytest.fail("nothing finishes before the cancel")
            assert scope.cancelled_caught
            assert all(isinstance(job.error, JobDeferred) for job in scheduler.jobs())
            _assert_in_flight_journalled(journal, scheduler)
    assert emu.inspect.creates_total == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_shutdown_from_another_task(tmp_path: Path) -> None:
    """shutdown(wait=False) from a task other than the one that entered the scheduler
    stops it at once; the entering task carries on and leaves the block cleanly."""
    after_join = False
    async with emulator(limits=TWO, latency=2.0) as emu, client_for(emu) as client:
        with Journal(tmp_path / "j.db") as journal:
            async with scheduler_for(client, limits=TWO, journal=journal) as scheduler:
                jobs = [scheduler.submit(r, key=k) for k, r in _items(6)]

                async def stop_soon() -> None:
                    await _wait_for_submitted(scheduler, 2)
                    await scheduler.shutdown(wait=False)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(stop_soon)
                    with anyio.fail_after(5):
                        await scheduler.join()
                after_join = True
                with pytest.raises(RuntimeError, match="closed"):
                    scheduler.submit(ImageRequest("too late"), key="late")
            assert after_join
            assert [job.state for job in jobs[:2]] == [JobState.SUBMITTED] * 2
            assert all(isinstance(job.error, JobDeferred) for job in jobs)
            _assert_in_flight_journalled(journal, scheduler)


async def test_resumed_generations_take_slots_but_no_rate_tokens(tmp_path: Path) -> None:
    """On resume, generations created by the earlier run hold a slot while they run but
    spend no create-rate token: only the creates actually sent are granted tokens."""
    async with emulator(limits=TWO, latency=0.5) as emu, client_for(emu) as client:
        with Journal(tmp_path / "j.db") as journal:
            async with scheduler_for(client, limits=TWO, journal=journal) as first:
                for key, request in _items(6):
                    first.submit(request, key=key)
                await _wait_for_submitted(first, 2)
                await first.shutdown(wait=False)
            async with scheduler_for(client, limits=TWO, journal=journal) as second:
                for job in second.resume():
                    await job
                stats = (await second.limiter.statistics())[Family.IMAGE]
            assert journal.counts() == {"completed": 6}
    assert emu.inspect.creates_total == 6
    assert stats.granted == 4
    assert emu.inspect.families[Family.IMAGE].peak_concurrency <= 2


async def test_shutdown_inside_a_nested_scope(tmp_path: Path) -> None:
    """shutdown(wait=False) awaited inside a timeout scope of the entering task stops the
    scheduler; the task group is exited only when the async with block is left."""
    async with emulator(limits=TWO, latency=2.0) as emu, client_for(emu) as client:
        with Journal(tmp_path / "j.db") as journal:
            async with scheduler_for(client, limits=TWO, journal=journal) as scheduler:
                for key, request in _items(6):
                    scheduler.submit(request, key=key)
                await _wait_for_submitted(scheduler, 2)
                with anyio.fail_after(5):
                    await scheduler.shutdown(wait=False)
                await scheduler.shutdown()  # again: nothing left to do
            _assert_in_flight_journalled(journal, scheduler)
