"""Account limits (429s), credits, moderation, the latency model and the inspection figures."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

import asyncio
import time

import lumaai
import pytest

from lumasched.emulator import Emulator
from lumasched.limits import Family, FamilyLimits, Limits
from lumasched.pricing import estimate_cost_cents
from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    http,
    luma_emulator,
    luma_emulator_config,
    sdk,
    wait_terminal,
)

TIGHT = Limits(
    video=FamilyLimits(concurrency=2, requests=100, per_seconds=60.0),
    image=FamilyLimits(concurrency=100, requests=3, per_seconds=0.5),
)


def _client(emu: Emulator, **kwargs) -> lumaai.AsyncLumaAI:
    return lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url, **kwargs)


async def test_create_rate_over_the_window_gets_429_with_retry_after():
    """The (requests+1)-th create inside per_seconds gets 429: whole-second Retry-After
    (RFC 9110 delay-seconds) and the exact wait in Retry-After-ms."""
    async with (
        Emulator(fast_emulator_config(limits=TIGHT)) as emu,
        _client(emu, max_retries=0) as client,
    ):
        for i in range(3):
            await client.generations.image.create(model="photon-1", prompt=f"cat {i}")
        with pytest.raises(lumaai.RateLimitError) as info:
            await client.generations.image.create(model="photon-1", prompt="cat 3")
        headers = info.value.response.headers
        assert headers["retry-after"] == "1"
        assert 0 < int(headers["retry-after-ms"]) <= 500
        assert "3 create requests per 0.5 seconds" in info.value.body["detail"]
        stats = emu.inspect.families[Family.IMAGE]
        assert stats.rate_limited == {"rate": 1}
        assert (stats.arrivals, stats.creates) == (4, 3)
        assert (stats.peak_window_arrivals, stats.peak_window_creates) == (4, 3)
        await asyncio.sleep(int(headers["retry-after-ms"]) / 1000)
        await client.generations.image.create(model="photon-1", prompt="cat 4")
        assert emu.inspect.creates_total == 4


async def test_concurrency_cap_gets_429_until_a_job_ends():
    """A create beyond the family's concurrency gets 429; a slot frees when a job is terminal."""
    config = fast_emulator_config(limits=TIGHT, fixed_latency=0.3)
    async with Emulator(config) as emu, _client(emu, max_retries=0) as client:
        first = await client.generations.create(model="ray-2", prompt="one")
        await client.generations.create(model="ray-2", prompt="two")
        with pytest.raises(lumaai.RateLimitError) as info:
            await client.generations.create(model="ray-2", prompt="three")
        assert info.value.body["detail"].startswith("Too many concurrent generations")
        assert info.value.response.headers["retry-after"] == "1"
        assert 0 < int(info.value.response.headers["retry-after-ms"]) <= 300
        await client.generations.image.create(model="photon-1", prompt="other family")
        await wait_terminal(client, first.id)
        await client.generations.create(model="ray-2", prompt="three")
        video = emu.inspect.families[Family.VIDEO]
        assert video.peak_concurrency == 2
        assert video.rate_limited == {"concurrency": 1}
        assert emu.inspect.rate_limited_total == 1


async def test_sdk_retry_obeys_retry_after_ms():
    """The SDK's own retry waits Retry-After-ms and then succeeds; the 429 is still counted."""
    async with Emulator(fast_emulator_config(limits=TIGHT)) as emu, _client(emu) as client:
        for i in range(4):
            await client.generations.image.create(model="photon-1", prompt=f"cat {i}")
    assert emu.inspect.families[Family.IMAGE].rate_limited_total == 1
    assert emu.inspect.creates_total == 4


async def test_credits_charged_at_create_refunded_on_failure():
    """A create pre-charges its price; a failed generation is refunded, a completed one is not."""
    # A second per job: the balance is read before either can end, even on a busy machine.
    config = fast_emulator_config(fixed_latency=1.0)
    async with Emulator(config) as emu, _client(emu, max_retries=0) as sdk:
        start = (await sdk.credits.get()).credit_balance
        body = {"model": "ray-2", "resolution": "720p", "duration": "5s", "aspect_ratio": "16:9"}
        ok = await sdk.generations.create(prompt="a teddy bear", **body)
        bad = await sdk.generations.create(prompt="something nsfw here", **body)
        price = estimate_cost_cents("video", body)
        assert round(price) == 175
        balance = (await sdk.credits.get()).credit_balance
        assert balance == pytest.approx(start - 2 * price, abs=0.01)
        failed = await wait_terminal(sdk, bad.id)
        await wait_terminal(sdk, ok.id)
        assert failed.failure_reason == "Contains blacklisted words"
        balance = (await sdk.credits.get()).credit_balance
        assert balance == pytest.approx(start - price, abs=0.01)


async def test_failure_rate_fails_jobs_and_frees_slots():
    """failure_rate=1 fails every job with "Job failed" and frees its slot."""
    async with Emulator(fast_emulator_config(failure_rate=1.0)) as emu, _client(emu) as client:
        generation = await client.generations.image.create(model="photon-1", prompt="a cat")
        assert emu.inspect.families[Family.IMAGE].in_flight == 1
        failed = await wait_terminal(client, generation.id)
        assert (failed.state, failed.failure_reason, failed.assets) == (
            "failed",
            "Job failed",
            None,
        )
        assert emu.inspect.families[Family.IMAGE].in_flight == 0


async def test_unreachable_keyframe_fails_to_read_frames(sdk, luma_emulator):
    """A keyframe URL containing "unreachable" ends failed "Failed to read user input frames"."""
    frames = {"frame0": {"type": "image", "url": "https://unreachable.example/a.jpg"}}
    generation = await sdk.generations.create(model="ray-2", prompt="a cat", keyframes=frames)
    failed = await wait_terminal(sdk, generation.id)
    assert failed.failure_reason == "Failed to read user input frames"


async def test_speed_scales_latency():
    """The same job takes 10x longer at speed 20 than at speed 200 (photon-flash-1: 6 s base)."""

    async def time_to_done(speed: float) -> tuple[float, float]:
        async with Emulator(speed=speed, jitter=0.0) as emu, _client(emu) as client:
            started = time.monotonic()
            generation = await client.generations.image.create(
                model="photon-flash-1", prompt="a cat"
            )
            await wait_terminal(client, generation.id)
            timeline = emu.store.get(generation.id).timeline
            return timeline.done_at - timeline.created, time.monotonic() - started

    (fast, fast_seen), (slow, slow_seen) = await time_to_done(200.0), await time_to_done(20.0)
    assert (fast, slow) == (pytest.approx(0.03), pytest.approx(0.3))
    assert fast_seen >= fast and slow_seen >= slow  # never reported done early


async def test_latency_model_orders_models_resolutions_durations():
    """Flash is faster; 4k and 9 s are slower; queued comes before dreaming."""
    async with Emulator(speed=1.0, jitter=0.0) as emu:
        from lumasched.emulator._validate import validate_create

        def total(body: dict) -> float:
            spec = validate_create("video", body, lambda _: None)
            queued, dreaming = emu.store._latency(spec)
            assert 0 < queued < dreaming
            return queued + dreaming

        base = total({"model": "ray-2", "prompt": "a cat"})
        assert total({"model": "ray-flash-2", "prompt": "a cat"}) < base
        assert total({"model": "ray-2", "prompt": "a cat", "resolution": "4k"}) > base
        assert total({"model": "ray-2", "prompt": "a cat", "duration": "9s"}) > base


async def test_fixed_latency_is_exact_and_states_progress():
    """fixed_latency L: queued, then dreaming after L/5, completed at L (not scaled by speed)."""
    async with Emulator(fixed_latency=0.6, speed=1000) as emu, _client(emu) as client:
        generation = await client.generations.create(model="ray-2", prompt="a cat")
        assert generation.state == "queued"
        timeline = emu.store.get(generation.id).timeline
        assert timeline.dreaming_at - timeline.created == pytest.approx(0.12)
        assert timeline.done_at - timeline.created == pytest.approx(0.6)
        # The wire serves the timeline; polled (not slept past) so a busy machine
        # that misses the dreaming window cannot fail the test, only skip a state.
        seen = ["queued"]
        deadline = time.monotonic() + 10
        while seen[-1] != "completed":
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.01)
            state = (await client.generations.get(generation.id)).state
            if state != seen[-1]:
                seen.append(state)
        assert seen in (["queued", "dreaming", "completed"], ["queued", "completed"])
        assert time.monotonic() >= timeline.done_at
        start = timeline.created
        assert [timeline.state_at(start + t) for t in (0.11, 0.13, 0.59, 0.61)] == [
            "queued", "dreaming", "dreaming", "completed"
        ]  # fmt: skip


async def test_inspection_counts_polls_and_duplicates(sdk, luma_emulator):
    """inspect counts GETs, lists, deletes and identical bodies created more than once."""
    one = await sdk.generations.image.create(model="photon-1", prompt="same cat")
    await sdk.generations.image.create(model="photon-1", prompt="same cat")
    await sdk.generations.image.create(model="photon-1", prompt="other cat")
    await sdk.generations.get(one.id)
    await sdk.generations.list()
    await sdk.generations.delete(one.id)
    inspect = luma_emulator.inspect
    assert (inspect.gets, inspect.lists, inspect.polls, inspect.deletes) == (1, 1, 2, 1)
    assert inspect.creates_by_kind == {"image": 3}
    assert inspect.duplicate_creates == 1
    assert list(inspect.duplicate_bodies.values()) == [2]
    luma_emulator.reset_stats()
    assert (inspect.creates_total, inspect.gets, inspect.duplicate_creates) == (0, 0, 0)


async def test_control_endpoints_over_http(sdk, luma_emulator, http):
    """/_emulator/stats, /_emulator/reset and /_emulator/faults work over HTTP, and
    with an API key set they require it (401 without)."""
    from tests._emulator_fixtures import API_KEY

    await sdk.generations.image.create(model="photon-1", prompt="a cat")
    origin = luma_emulator.origin
    for method, path in (("GET", "stats"), ("POST", "faults"), ("POST", "reset")):
        async with http.request(method, f"{origin}/_emulator/{path}", json={}) as response:
            assert response.status == 401
    assert (await sdk.generations.list()).count == 1
    http.headers["Authorization"] = f"Bearer {API_KEY}"
    async with http.get(f"{origin}/_emulator/stats") as response:
        stats = await response.json()
    assert stats["creates_total"] == 1
    assert stats["families"]["image"]["peak_concurrency"] == 1
    async with http.post(f"{origin}/_emulator/faults", json={"server_errors": {"ping": 1.0}}) as r:
        assert r.status == 200
    with pytest.raises(lumaai.InternalServerError):
        await sdk.ping.check()
    async with http.post(f"{origin}/_emulator/faults", json={"bogus": 1}) as r:
        assert r.status == 400
    async with http.post(f"{origin}/_emulator/reset", json={"generations": True}) as response:
        assert (await response.json())["creates_total"] == 0
    assert (await sdk.generations.list()).count == 0
