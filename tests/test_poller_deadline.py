"""The poll loop's deadline per generation (fake time)."""

from __future__ import annotations

from lumasched import GenerationTimeout
from lumasched.engine.poller import Poller
from tests._poller_fixtures import FakeClock, FakeStatusClient

KEY = ("ray-2", None, None)


async def _run(poller: Poller, clock: FakeClock, until: float) -> None:
    while clock.now < until:
        next_at = await poller.poll_once()
        if next_at is None:
            return
        clock.now = max(clock.now, next_at)


async def test_a_generation_past_its_deadline_is_given_up_with_a_timeout() -> None:
    """Still running at the deadline: checked once more, then on_error gets GenerationTimeout."""
    clock = FakeClock()
    client = FakeStatusClient(clock)
    poller = Poller(client, clock=clock)
    errors: list[BaseException] = []
    updates: list[str] = []

    async def on_update(generation: object) -> None:
        updates.append(str(getattr(generation, "state", "")))

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    gid = client.create(10_000.0, states=[(0.0, "paused")])
    poller.watch(gid, key=KEY, on_update=on_update, on_error=on_error, deadline=clock.now + 600)
    start = clock.now
    await _run(poller, clock, start + 10_000)
    assert len(errors) == 1 and isinstance(errors[0], GenerationTimeout)
    assert errors[0].generation_id == gid and errors[0].state == "paused"
    assert str(errors[0]).startswith("no terminal state after 600s")
    assert clock.now - start == 600, "the last check is at the deadline"
    assert poller.watching == 0 and poller.stats().expired == 1
    assert updates == ["paused"]


async def test_a_generation_ending_before_its_deadline_is_not_expired() -> None:
    """A terminal state seen by the check at the deadline wins over the timeout."""
    clock = FakeClock()
    client = FakeStatusClient(clock)
    poller = Poller(client, clock=clock)
    seen: list[str] = []

    async def on_update(generation: object) -> None:
        seen.append(str(getattr(generation, "state", "")))

    async def on_error(exc: BaseException) -> None:
        raise AssertionError(f"expired: {exc}")

    gid = client.create(30.0)
    poller.watch(gid, key=KEY, on_update=on_update, on_error=on_error, deadline=clock.now + 30)
    await _run(poller, clock, clock.now + 100)
    assert seen[-1] == "completed" and poller.stats().expired == 0
