"""The scheduler against the emulator over real sockets: limits, 429s, dependencies,
cancellation, reconcile, budget, bounded iteration, events."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from lumasched.api import (
    GenerationKeyframe,
    ImageRequest,
    Keyframes,
    UpscaleRequest,
    VideoRequest,
)
from lumasched.engine.jobs import JobCancelled, JobDeferred, JobEvent, JobState
from lumasched.errors import (
    AmbiguousCreateError,
    DependencyFailed,
    GenerationFailed,
    ValidationError,
)
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.store.journal import Journal, JournalBatch, Write
from tests._engine_fixtures import API_KEY, assert_within_limits, engine, scheduler_for
from tests._poller_fixtures import FakeClock


def _batch(images: int, videos: int) -> list[tuple[str, ImageRequest | VideoRequest]]:
    items: list[tuple[str, ImageRequest | VideoRequest]] = []
    for i in range(max(images, videos)):
        if i < images:
            items.append((f"img-{i}", ImageRequest(f"a cat number {i}")))
        if i < videos:
            items.append((f"vid-{i}", VideoRequest(f"a dog number {i}")))
    return items


async def test_mixed_batch_within_limits(tmp_path: Path) -> None:
    """A mixed batch completes with zero 429s, zero duplicates, and every limit respected."""
    with Journal(tmp_path / "j.db") as journal:
        async with engine(journal=journal) as (emu, _, scheduler):
            jobs = [scheduler.submit(r, key=k) for k, r in _batch(14, 8)]
            results = [await job for job in jobs]
        assert_within_limits(emu)
        assert emu.inspect.creates_total == 22
        assert {r.key for r in results} == {job.key for job in jobs}
        assert all(job.state is JobState.COMPLETED for job in jobs)
        assert all(r.timings.created and r.timings.completed for r in results)
        assert journal.counts() == {"completed": 22}
        ids = {rec.generation_id for rec in journal.records()}
        assert len(ids) == 22 and None not in ids
        counters = scheduler.counters()
        assert counters.creates == 22 and counters.rate_limited == 0
        assert counters.families[Family.VIDEO].completed == 8
        assert counters.families[Family.IMAGE].completed == 14
        assert counters.polls > 0


class _SlowFirstIntents(Journal):
    """A journal whose commits of the first intents are slow (0.12 s each commit),
    as fsync is on a loaded machine."""

    slow = 8

    def apply(self, writes: Sequence[Write]) -> list[Exception | None]:
        intents = sum(getattr(w, "func", None) is JournalBatch.record_intent for w in writes)
        if intents and self.slow > 0:
            self.slow -= intents
            time.sleep(0.12)
        return super().apply(writes)


async def test_creates_delayed_after_their_grant_stay_within_the_window(tmp_path: Path) -> None:
    """A wave of creates held up between grant and send (slow journal) and the next wave
    sent at once still land in distinct server windows: zero 429s."""
    rate_bound = Limits(image=FamilyLimits(concurrency=20, requests=8, per_seconds=1.0))
    with _SlowFirstIntents(tmp_path / "j.db") as journal:
        async with engine(
            limits=rate_bound, emu_limits=rate_bound, latency=0.05, journal=journal
        ) as (emu, _, scheduler):
            jobs = [
                scheduler.submit(ImageRequest(f"a cat number {i}"), key=f"k{i}") for i in range(16)
            ]
            for job in jobs:
                await job
    assert_within_limits(emu, rate_bound)
    assert scheduler.counters().rate_limited == 0


async def test_429_storm_is_absorbed() -> None:
    """Limits far above the server's: 429s are re-queued, no job fails or is created twice."""
    generous = Limits(
        video=FamilyLimits(concurrency=20, requests=100, per_seconds=1.0),
        image=FamilyLimits(concurrency=20, requests=100, per_seconds=1.0),
    )
    async with engine(limits=generous) as (emu, _, scheduler):
        jobs = [scheduler.submit(r, key=k) for k, r in _batch(12, 10)]
        for job in jobs:
            await job
    assert emu.inspect.rate_limited_total > 0
    assert scheduler.counters().rate_limited == emu.inspect.rate_limited_total
    assert emu.inspect.creates_total == 22
    assert emu.inspect.duplicate_creates == 0
    assert all(job.state is JobState.COMPLETED for job in jobs)


async def test_dependency_chain_video_extend_upscale() -> None:
    """video -> extend (keyframe ref) -> upscale: each waits and gets the real id."""
    async with engine() as (_, _, scheduler):
        video = scheduler.submit(VideoRequest("a teddy bear"), key="v")
        extend = scheduler.submit(
            VideoRequest(
                "it walks away",
                keyframes=Keyframes(frame0=GenerationKeyframe(scheduler.ref(video))),
            ),
            key="x",
        )
        upscale = scheduler.submit(
            UpscaleRequest(scheduler.ref(extend), resolution="1080p"), key="u"
        )
        assert extend.state is JobState.WAITING and upscale.state is JobState.WAITING
        v, x, u = await video, await extend, await upscale
    assert x.generation.request is not None
    assert x.generation.request["keyframes"]["frame0"]["id"] == v.generation.id
    assert u.generation.id not in (v.generation.id, None)
    assert v.timings.completed is not None and x.timings.created is not None
    assert v.timings.completed <= x.timings.created


async def test_failed_dependency_fails_dependents_clearly() -> None:
    """A dependency that fails makes its dependents fail with DependencyFailed, unsent."""
    async with engine() as (emu, _, scheduler):
        bad = scheduler.submit(VideoRequest("something blacklisted here"), key="bad")
        child = scheduler.submit(UpscaleRequest(scheduler.ref(bad)), key="child")
        grandchild = scheduler.submit(UpscaleRequest(scheduler.ref(child)), key="grand")
        with pytest.raises(GenerationFailed, match="blacklisted"):
            await bad
        with pytest.raises(DependencyFailed, match="'child' depends on 'bad', which failed"):
            await child
        with pytest.raises(DependencyFailed, match="depends on 'child'"):
            await grandchild
    assert bad.state is JobState.FAILED and child.state is JobState.FAILED
    assert emu.inspect.creates_total == 1


async def test_unknown_reference_fails_at_submit() -> None:
    """A ref to a job never submitted fails at once instead of waiting forever."""
    async with engine() as (emu, _, scheduler):
        job = scheduler.submit(UpscaleRequest(scheduler.ref("ghost")), key="u")
        with pytest.raises(DependencyFailed, match="never submitted"):
            await job
    assert emu.inspect.creates_total == 0


async def test_invalid_request_raises_at_submit() -> None:
    """submit() refuses a bad request at once, listing every problem, and schedules nothing."""
    async with engine() as (emu, _, scheduler):
        with pytest.raises(ValidationError, match="resolution"):
            scheduler.submit(VideoRequest("x", resolution="9000p"), key="bad")
        assert scheduler.get("bad") is None and scheduler.jobs() == []
    assert emu.inspect.creates_total == 0


async def test_user_exception_leaves_async_with_as_itself() -> None:
    """An exception raised by the caller's code inside the block is not wrapped in a group."""
    with pytest.raises(KeyError, match="mine") as caught:
        async with engine() as (_, _, scheduler):
            scheduler.submit(ImageRequest("a cat"), key="cat")
            raise KeyError("mine")
    assert type(caught.value) is KeyError


async def test_cancel_queued_and_submitted() -> None:
    """Cancel: a queued job is never sent; a submitted one frees its slot at its end."""
    one = Limits(video=FamilyLimits(concurrency=1, requests=10, per_seconds=1.0))
    async with engine(limits=one, emu_limits=one, latency=0.4) as (emu, _, scheduler):
        first = scheduler.submit(VideoRequest("first"), key="a")
        queued = scheduler.submit(VideoRequest("second"), key="b")
        third = scheduler.submit(VideoRequest("third"), key="c")
        with anyio.fail_after(5):
            while first.state is not JobState.SUBMITTED:
                await anyio.sleep(0.01)
        assert queued.cancel()
        assert first.cancel()
        with pytest.raises(JobCancelled):
            await queued
        with pytest.raises(JobCancelled):
            await first
        await third
        assert not first.cancel()
    assert queued.state is JobState.CANCELLED and first.state is JobState.CANCELLED
    assert emu.inspect.creates_total == 2  # a and c
    assert emu.inspect.rate_limited_total == 0  # c waited for a's slot


async def test_priorities_higher_first_fifo_within() -> None:
    """With one slot, higher priorities are created first, FIFO within a priority."""
    one = Limits(image=FamilyLimits(concurrency=1, requests=50, per_seconds=1.0))
    order: list[str] = []
    async with engine(limits=one, emu_limits=one, latency=0.05) as (_, _, scheduler):
        scheduler.add_listener(
            lambda e: order.append(e.key) if e.new is JobState.CREATING else None
        )
        blocker = scheduler.submit(ImageRequest("blocker"), key="blocker")
        with anyio.fail_after(5):
            while blocker.state is not JobState.SUBMITTED:
                await anyio.sleep(0.005)
        for key, priority in [("l1", 0), ("h1", 5), ("l2", 0), ("h2", 5), ("m1", 1)]:
            scheduler.submit(ImageRequest(f"prompt {key}"), key=key, priority=priority)
        await blocker
    assert order == ["blocker", "h1", "h2", "m1", "l1", "l2"]


async def test_dropped_create_is_reconciled_without_duplicate() -> None:
    """The server accepts creates but the connection drops: reconcile adopts, nothing is re-sent."""
    async with engine(emulator_config={"faults": {"drop_after_create": 1.0}}) as (
        emu,
        _,
        scheduler,
    ):
        jobs = [scheduler.submit(r, key=k) for k, r in _batch(3, 2)]
        results = [await job for job in jobs]
    assert emu.inspect.creates_total == 5
    assert emu.inspect.duplicate_creates == 0
    counters = scheduler.counters()
    assert counters.ambiguous_creates == 5 and counters.reconciled_found == 5
    assert len({r.generation.id for r in results}) == 5


async def test_twin_bodies_dropped_get_distinct_generations() -> None:
    """Two jobs with identical bodies, both dropped: each adopts its own generation."""
    async with engine(emulator_config={"faults": {"drop_after_create": 1.0}}) as (
        emu,
        _,
        scheduler,
    ):
        a = scheduler.submit(ImageRequest("same prompt"), key="a")
        b = scheduler.submit(ImageRequest("same prompt"), key="b")
        ra, rb = await a, await b
    assert emu.inspect.creates_total == 2
    assert ra.generation.id != rb.generation.id


async def test_server_error_with_nothing_created_is_retried_once() -> None:
    """A 500 that created nothing: reconcile proves absence, then exactly one new create."""
    async with engine(emulator_config={"faults": {"server_errors": {"create": 1.0}}}) as (
        emu,
        _,
        scheduler,
    ):
        job = scheduler.submit(ImageRequest("a lonely cat"), key="a")
        with anyio.fail_after(5):
            while scheduler.counters().reconciles == 0:
                await anyio.sleep(0.01)
        emu.set_faults(server_errors={})
        result = await job
    assert result.generation.id
    assert emu.inspect.creates_total == 1
    assert job.attempts == 2


async def test_unresolvable_create_fails_instead_of_duplicating() -> None:
    """If the list endpoint never answers, the job fails (AmbiguousCreateError) after give-up."""
    faults = {"drop_after_create": 1.0, "server_errors": {"list": 1.0}}
    async with engine(emulator_config={"faults": faults}, reconcile_give_up=0.6) as (
        emu,
        _,
        scheduler,
    ):
        job = scheduler.submit(ImageRequest("a cat"), key="a")
        with pytest.raises(AmbiguousCreateError, match="could not tell"):
            await job
    assert emu.inspect.creates_total == 1


class _FastForward(FakeClock):
    """Virtual time that runs a thousand times faster than the real one."""

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.sleep(max(0.0, seconds) / 1000)


async def test_reconcile_give_up_runs_on_the_injected_clock() -> None:
    """The reconcile deadline (15 minutes here) passes on the scheduler's clock, not
    the wall clock: under a clock a thousand times faster, the job fails within a second."""
    faults = {"drop_after_create": 1.0, "server_errors": {"list": 1.0}}
    async with engine(
        emulator_config={"faults": faults},
        clock=_FastForward(),
        reconcile_give_up=900.0,
        reconcile_interval=60.0,
    ) as (_, _, scheduler):
        job = scheduler.submit(ImageRequest("a cat"), key="a")
        with anyio.fail_after(30), pytest.raises(AmbiguousCreateError, match="could not tell"):
            await job


async def test_a_failing_list_is_retried_by_reconcile_alone() -> None:
    """One retry layer: each reconcile round reads the list once; the client does not
    retry a failed list under reconcile's own loop (which paces the next round)."""
    faults = {"drop_after_create": 1.0, "server_errors": {"list": 1.0}}
    async with engine(
        emulator_config={"faults": faults},
        clock=_FastForward(),
        reconcile_give_up=300.0,
        reconcile_interval=60.0,
    ) as (emu, client, scheduler):
        assert client.retry.attempts > 1  # the client would retry this list on its own
        job = scheduler.submit(ImageRequest("a cat"), key="a")
        with anyio.fail_after(30), pytest.raises(AmbiguousCreateError):
            await job
        rounds = scheduler.counters().reconciles
    assert rounds >= 2
    assert emu.inspect.requests_by_route["list"] == rounds


async def test_as_completed_pulls_lazily() -> None:
    """as_completed never holds more than max_pending unfinished jobs, however long the input."""
    pulled = 0
    done = 0
    peak_ahead = 0

    def items() -> Iterator[ImageRequest]:
        nonlocal pulled, peak_ahead
        for i in range(16):
            pulled += 1
            peak_ahead = max(peak_ahead, pulled - done)
            yield ImageRequest(f"lazy {i}")

    async with engine(latency=0.05) as (_, _, scheduler):
        async for job in scheduler.as_completed(items(), max_pending=4):
            assert job.done and job.state is JobState.COMPLETED
            done += 1
    assert done == 16
    assert peak_ahead <= 5


async def test_map_keeps_input_order() -> None:
    """map yields results in input order and, with return_exceptions, failures as values."""
    items = [
        ("a", ImageRequest("one")),
        ("b", ImageRequest("blacklisted")),
        ("c", ImageRequest("xyz")),
    ]
    async with engine(latency=0.05) as (_, _, scheduler):
        out = [r async for r in scheduler.map(items, return_exceptions=True)]
    assert [getattr(r, "key", None) for r in out] == ["a", None, "c"]
    assert isinstance(out[1], GenerationFailed)


async def test_budget_stops_creating_and_keeps_the_rest(tmp_path: Path) -> None:
    """With a budget for three jobs, three are created; the rest stay pending (reason budget)."""
    with Journal(tmp_path / "j.db") as journal:
        async with engine(journal=journal, budget_cents=30.0, cost_of=lambda r: 10.0) as (
            emu,
            _,
            scheduler,
        ):
            jobs = [scheduler.submit(ImageRequest(f"prompt {i}"), key=f"k{i}") for i in range(6)]
            for job in jobs:
                await job.result() if job.key in ("k0", "k1", "k2") else None
            await scheduler.join()
        assert emu.inspect.creates_total == 3
        deferred = [job for job in jobs if isinstance(job.error, JobDeferred)]
        assert [job.key for job in deferred] == ["k3", "k4", "k5"]
        assert all(job.error.reason == "budget" for job in deferred)  # type: ignore[union-attr]
        assert journal.counts() == {"completed": 3, "pending": 3}
        assert {journal.get(k).reason for k in ("k3", "k4", "k5")} == {"budget"}  # type: ignore[union-attr]
        assert scheduler.spent_cents == 30.0


async def test_stop_creating_finishes_in_flight_only() -> None:
    """stop_creating: in-flight jobs complete, queued ones are deferred and never sent."""
    one = Limits(video=FamilyLimits(concurrency=2, requests=10, per_seconds=1.0))
    async with engine(limits=one, emu_limits=one, latency=0.3) as (emu, _, scheduler):
        jobs = [scheduler.submit(VideoRequest(f"video {i}"), key=f"v{i}") for i in range(5)]
        with anyio.fail_after(5):
            while emu.inspect.creates_total < 2:
                await anyio.sleep(0.01)
        await scheduler.stop_creating()
        late = scheduler.submit(VideoRequest("late"), key="late")
    assert [job.state for job in jobs[:2]] == [JobState.COMPLETED] * 2
    assert all(isinstance(job.error, JobDeferred) for job in [*jobs[2:], late])
    assert emu.inspect.creates_total == 2


async def test_events_cover_every_transition() -> None:
    """Listeners and subscribers see every transition of a job, in order."""
    seen: list[JobEvent] = []
    async with engine(latency=0.05) as (_, _, scheduler):
        stream = scheduler.subscribe()
        scheduler.add_listener(seen.append)
        job = scheduler.submit(ImageRequest("watched"), key="w")
        await job
    with stream:
        streamed = [e async for e in stream]
    transitions = [(e.old, e.new) for e in seen if e.old is not e.new]
    assert transitions == [
        (JobState.PENDING, JobState.QUEUED),
        (JobState.QUEUED, JobState.CREATING),
        (JobState.CREATING, JobState.SUBMITTED),
        (JobState.SUBMITTED, JobState.COMPLETED),
    ]
    assert [(e.old, e.new) for e in streamed] == [(e.old, e.new) for e in seen]
    assert seen[-1].generation_id == job.generation_id


async def test_resubmitting_a_key_returns_the_same_job() -> None:
    """Submitting the same key twice in one session returns the first job, sent once."""
    async with engine(latency=0.05) as (emu, _, scheduler):
        a = scheduler.submit(ImageRequest("once"), key="k")
        b = scheduler.submit(ImageRequest("once"), key="k")
        assert a is b
        await a
    assert emu.inspect.creates_total == 1


async def test_resume_after_abrupt_stop(tmp_path: Path) -> None:
    """Stop at once mid-batch, resubmit the same keys: each job finishes exactly once."""
    items = _batch(8, 4)
    async with engine(latency=0.4) as (emu, client, _):
        with Journal(tmp_path / "j.db") as journal:
            async with scheduler_for(client, journal=journal) as first:
                for key, request in items:
                    first.submit(request, key=key)
                with anyio.fail_after(5):
                    while emu.inspect.creates_total < 5:
                        await anyio.sleep(0.01)
                await first.shutdown(wait=False)
            states = journal.counts()
            assert states.get("completed", 0) < 12
            async with scheduler_for(client, journal=journal) as second:
                jobs = [second.submit(r, key=k) for k, r in items]
                results = [await job for job in jobs]
            assert journal.counts() == {"completed": 12}
    assert emu.inspect.creates_total == 12
    assert emu.inspect.duplicate_creates == 0
    assert len({r.generation.id for r in results}) == 12


async def test_resume_picks_up_the_journal_without_resubmitting(tmp_path: Path) -> None:
    """scheduler.resume() finishes every unfinished journal job, chains included, none twice."""
    async with engine(latency=0.4) as (emu, client, _):
        with Journal(tmp_path / "j.db") as journal:
            async with scheduler_for(client, journal=journal) as first:
                video = first.submit(VideoRequest("a teddy bear"), key="v")
                first.submit(UpscaleRequest(first.ref(video)), key="u")
                for key, request in _batch(6, 0):
                    first.submit(request, key=key)
                with anyio.fail_after(5):
                    while emu.inspect.creates_total < 3:
                        await anyio.sleep(0.01)
                await first.shutdown(wait=False)
            async with scheduler_for(client, journal=journal) as second:
                jobs = second.resume()
                assert {job.key for job in jobs} <= {"v", "u", *(f"img-{i}" for i in range(6))}
                for job in jobs:
                    await job
            assert journal.counts() == {"completed": 8}
    assert emu.inspect.creates_total == 8
    assert emu.inspect.duplicate_creates == 0


async def test_cancel_while_creating_follows_the_generation_to_its_end() -> None:
    """A job cancelled mid-create is cancelled once created; its slot stays held until the end."""
    one = Limits(video=FamilyLimits(concurrency=1, requests=10, per_seconds=1.0))
    faults = {"create_response_delay": 0.2}
    async with engine(
        limits=one, emu_limits=one, latency=0.3, emulator_config={"faults": faults}
    ) as (emu, _, scheduler):
        job = scheduler.submit(VideoRequest("cancel me"), key="a")
        nxt = scheduler.submit(VideoRequest("next one"), key="b")
        with anyio.fail_after(5):
            while job.state is not JobState.CREATING:
                await anyio.sleep(0.005)
        assert job.cancel()
        with pytest.raises(JobCancelled):
            await job
        assert job.generation_id is not None
        await nxt
    assert emu.inspect.creates_total == 2
    assert emu.inspect.rate_limited_total == 0


async def test_logs_never_hold_the_api_key(caplog: pytest.LogCaptureFixture) -> None:
    """Debug logs of a batch with dropped creates and 429s never contain the API key."""
    caplog.set_level(logging.DEBUG, logger="lumasched")
    generous = Limits(image=FamilyLimits(concurrency=20, requests=100, per_seconds=1.0))
    faults = {"drop_after_create": 0.5}
    async with engine(limits=generous, emulator_config={"faults": faults}) as (_, _, scheduler):
        for i in range(10):
            scheduler.submit(ImageRequest(f"secret-free prompt {i}"), key=f"k{i}")
    counters = scheduler.counters()
    assert counters.ambiguous_creates > 0 and counters.rate_limited > 0
    assert any(r.name.startswith("lumasched") for r in caplog.records)
    assert API_KEY not in caplog.text
