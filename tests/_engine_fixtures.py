"""Shared helpers for the scheduler tests: an emulator, a client and a scheduler on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lumasched.api import LumaClient
from lumasched.api._retry import RetryPolicy
from lumasched.emulator import Emulator
from lumasched.engine.poller import Poller
from lumasched.engine.scheduler import Scheduler
from lumasched.limits import Family, FamilyLimits, InProcessLimiter, Limits
from lumasched.store.journal import Journal

# Small windows so tests exercise the limits in well under a second.
LIMITS = Limits(
    video=FamilyLimits(concurrency=3, requests=6, per_seconds=1.0),
    image=FamilyLimits(concurrency=4, requests=8, per_seconds=1.0),
)

# The limiter's default margin on a 1 s window (3%, 30 ms) is less than the
# event-loop lag between a grant and its create's arrival at the emulator on a
# loaded machine (same process, same loop); real windows are 60 s (1.8 s margin).
WINDOW_MARGIN = 0.2

API_KEY = "luma-secret-key-0123456789"

FAST_RECONCILE: dict[str, Any] = {
    "reconcile_settle": 0.4,
    "reconcile_interval": 0.1,
    "reconcile_give_up": 10.0,
}


def fast_poller(client: LumaClient) -> Poller:
    return Poller(client, first_probe=0.05, min_interval=0.02, max_interval=0.3)


@asynccontextmanager
async def emulator(
    *, limits: Limits = LIMITS, latency: float = 0.2, **config: Any
) -> AsyncIterator[Emulator]:
    config.setdefault("seed", 3)
    async with Emulator(fixed_latency=latency, limits=limits, **config) as emu:
        yield emu


@asynccontextmanager
async def client_for(emu: Emulator) -> AsyncIterator[LumaClient]:
    async with LumaClient(API_KEY, emu.base_url, retry=RetryPolicy.for_tests()) as client:
        yield client


def scheduler_for(client: LumaClient, **kwargs: Any) -> Scheduler:
    """A scheduler with the test limits, a fast poller and fast reconcile settings."""
    return Scheduler(
        client,
        limiter=InProcessLimiter(kwargs.pop("limits", LIMITS), window_margin=WINDOW_MARGIN),
        poller=fast_poller(client),
        **{**FAST_RECONCILE, **kwargs},
    )


@asynccontextmanager
async def engine(
    *,
    emu_limits: Limits = LIMITS,
    limits: Limits = LIMITS,
    latency: float = 0.2,
    journal: Journal | None = None,
    out_dir: Path | None = None,
    emulator_config: dict[str, Any] | None = None,
    **scheduler_kwargs: Any,
) -> AsyncIterator[tuple[Emulator, LumaClient, Scheduler]]:
    """An emulator, a client and an entered scheduler (exited, i.e. drained, on leaving)."""
    async with (
        emulator(limits=emu_limits, latency=latency, **(emulator_config or {})) as emu,
        client_for(emu) as client,
    ):
        scheduler = scheduler_for(
            client, limits=limits, journal=journal, out_dir=out_dir, **scheduler_kwargs
        )
        async with scheduler:
            yield emu, client, scheduler


def assert_within_limits(emu: Emulator, limits: Limits = LIMITS) -> None:
    """What the server saw: no 429, no duplicate body, concurrency and every window in limits."""
    inspect = emu.inspect
    assert inspect.rate_limited_total == 0, inspect.to_json()
    assert inspect.duplicate_creates == 0, inspect.duplicate_bodies
    for family in Family:
        seen = inspect.families[family]
        assert seen.peak_concurrency <= limits[family].concurrency, (family, seen.to_json())
        assert seen.peak_window_arrivals <= limits[family].requests, (family, seen.to_json())
