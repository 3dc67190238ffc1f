"""Errors that are no job's fault never fail a job: a rejected key or an API that
cannot be reached parks every job not created (pending in the journal) and the
awaited handles raise one clear error. Emulator over a real socket."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio

from lumasched.api import ImageRequest, LumaClient, VideoRequest
from lumasched.api._retry import RetryPolicy
from lumasched.engine.jobs import Job
from lumasched.errors import (
    APIUnreachableError,
    AuthenticationError,
    ItemsChangedError,
    LumaError,
)
from lumasched.store.journal import Journal
from tests._engine_fixtures import API_KEY, client_for, emulator, scheduler_for

ITEMS = [
    ("cat", ImageRequest("a cat asleep on a windowsill")),
    ("sea", VideoRequest("waves on a black sand beach")),
    ("owl", ImageRequest("a snowy owl on a branch")),
]


async def _error_of(job: Job) -> BaseException | None:
    try:
        await job
    except LumaError as exc:
        return exc
    return None


async def test_rejected_key_parks_every_job_then_the_right_key_does_them(tmp_path: Path) -> None:
    """401: no create after the first, every handle raises the same AuthenticationError,
    the journal holds them pending (none failed); a session with the right key does them."""
    with Journal(tmp_path / "j.db") as journal:
        async with emulator(api_key=API_KEY) as emu:
            async with LumaClient("lm-wrong", emu.base_url, retry=RetryPolicy.for_tests()) as bad:
                async with scheduler_for(bad, journal=journal) as scheduler:
                    jobs = [scheduler.submit(request, key=key) for key, request in ITEMS]
                    errors = [await _error_of(job) for job in jobs]
                    later = scheduler.submit(ImageRequest("a fox"), key="fox")
                    assert await _error_of(later) is errors[0]
                assert isinstance(errors[0], AuthenticationError)
                assert all(error is errors[0] for error in errors)
                assert scheduler.halted is errors[0]
            assert journal.counts() == {"pending": 4}
            assert emu.inspect.creates_total == 0

            async with client_for(emu) as good, scheduler_for(good, journal=journal) as scheduler:
                results = [await scheduler.submit(r, key=k) for k, r in ITEMS]
            assert len(results) == 3
            assert emu.inspect.creates_total == 3


async def test_unreachable_api_parks_jobs_after_the_bounded_time(tmp_path: Path) -> None:
    """Connection refused: retried with backoff (outage() says since when and why) until
    unreachable_give_up; then every handle raises APIUnreachableError, nothing failed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/dream-machine/v1"
    seen = []
    with Journal(tmp_path / "j.db") as journal:
        async with (
            LumaClient("lm-key", url, retry=RetryPolicy.for_tests()) as client,
            scheduler_for(client, journal=journal, unreachable_give_up=0.6) as scheduler,
        ):
            jobs = [scheduler.submit(request, key=key) for key, request in ITEMS]
            for job in jobs:
                seen.append(scheduler.outage())
                error = await _error_of(job)
                assert isinstance(error, APIUnreachableError)
                assert error.url == url and "could not connect" in str(error)
        assert journal.counts() == {"pending": 3}
    outage = next(o for o in seen if o is not None)
    assert outage.url == url and "could not connect" in outage.error


async def test_resubmitting_a_created_key_with_another_request_is_refused(tmp_path: Path) -> None:
    """A key created for one request is never reported done for another: the handle
    fails with ItemsChangedError naming the generation (nothing journalled or sent)."""
    with Journal(tmp_path / "j.db") as journal:
        async with emulator(api_key=API_KEY) as emu, client_for(emu) as client:
            async with scheduler_for(client, journal=journal) as scheduler:
                first = await scheduler.submit(ImageRequest("a cat"), key="cat")
            async with scheduler_for(client, journal=journal) as scheduler:
                same = await scheduler.submit(ImageRequest("a cat"), key="cat")
                edited = scheduler.submit(ImageRequest("a black cat"), key="cat")
                error = await _error_of(edited)
            assert same.generation.id == first.generation.id
            assert isinstance(error, ItemsChangedError)
            assert f"cat: request changed since generation {first.generation.id}" in str(error)
            assert emu.inspect.creates_total == 1
        assert journal.counts() == {"completed": 1}


async def test_key_rejected_while_polling_parks_generations_in_flight(tmp_path: Path) -> None:
    """Generations created earlier, picked up with a rejected key: the status checks
    answer 401, so the handles raise AuthenticationError and the journal keeps them
    submitted (never failed); the right key then finishes them without creating."""
    with Journal(tmp_path / "j.db") as journal:
        async with emulator(api_key=API_KEY, latency=1.0) as emu:
            async with client_for(emu) as good, scheduler_for(good, journal=journal) as scheduler:
                jobs = [scheduler.submit(request, key=key) for key, request in ITEMS]
                while emu.inspect.creates_total < len(ITEMS):
                    await anyio.sleep(0.01)
                await scheduler.shutdown(wait=False)
            assert journal.counts() == {"submitted": 3}
            async with (
                LumaClient("lm-wrong", emu.base_url, retry=RetryPolicy.for_tests()) as bad,
                scheduler_for(bad, journal=journal, resume=True) as scheduler,
            ):
                errors = [await _error_of(job) for job in scheduler.jobs()]
            assert len(errors) == 3
            assert all(isinstance(error, AuthenticationError) for error in errors)
            assert journal.counts() == {"submitted": 3}
            async with client_for(emu) as good, scheduler_for(good, journal=journal) as scheduler:
                results = [await scheduler.submit(r, key=k) for k, r in ITEMS]
            assert {r.generation.id for r in results} == {job.generation_id for job in jobs}
            assert emu.inspect.creates_total == len(ITEMS)
