"""Waiting in tests without fixed sleeps: poll a condition until a deadline.

A fixed sleep is either too short on a busy machine (a flake) or too long on an
idle one (wasted wall time). These poll often and give up only after a generous
deadline, naming what never happened. A negative check ("nothing happened")
still needs a positive sync point first: wait for the event that proves the
system has processed up to there, then assert the absence.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

__all__ = ["wait_until", "wait_until_async", "wait_until_sync"]

POLL = 0.01


async def wait_until(
    predicate: Callable[[], object], what: str, *, timeout: float = 10.0, poll: float = POLL
) -> None:
    """Until ``predicate()`` is true, checked every ``poll`` seconds on the event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(poll)


async def wait_until_async(
    predicate: Callable[[], Awaitable[object]],
    what: str,
    *,
    timeout: float = 10.0,
    poll: float = POLL,
) -> None:
    """As :func:`wait_until`, for a condition that must be awaited (a Redis read)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(poll)


def wait_until_sync(
    predicate: Callable[[], object], what: str, *, timeout: float = 10.0, poll: float = 0.02
) -> None:
    """As :func:`wait_until`, blocking (tests that drive subprocesses from a thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
