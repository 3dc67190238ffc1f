"""Callback delivery: POST the generation JSON when it is dreaming, completed, failed.

As documented: a non-200 answer (or no answer) is retried up to 3 times, 100 ms
apart, each POST with a 5 s timeout. One task per generation with a
``callback_url`` sleeps until each of its deliveries is due; ``close()``
cancels and awaits them all.

By default each state is announced once, in order, when it happens. The docs
say a receiver "is expected to be called multiple times for a status", so the
config can make delivery as untidy as a real queue: duplicates
(``callback_duplicates``), the final state before a stale ``dreaming``
(``callback_reorder``) and late arrival (``callback_delay``). A payload always
shows the generation as it was when its state changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from lumasched.emulator._config import EmulatorConfig
from lumasched.emulator._state import Record
from lumasched.emulator._stats import Inspector

__all__ = ["CallbackSender"]

log = logging.getLogger("lumasched.emulator")

Render = Callable[[Record, float], dict[str, Any]]


class CallbackSender:
    def __init__(
        self,
        config: EmulatorConfig,
        render: Render,
        inspect: Callable[[], Inspector],
        rng: random.Random | None = None,
    ):
        self._config = config
        self._rng = rng or random.Random()
        self._render = render
        self._inspect = inspect
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.callback_timeout)
        )

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def schedule(self, record: Record, *, after: float | None = None) -> None:
        """Announce ``record``'s coming state changes to its ``callback_url``
        (only those later than ``after``, a ``time.monotonic`` value)."""
        url = record.callback_url
        if url is None or self._session is None or record.deleted:
            return
        events = [at for at, _ in record.timeline.events if after is None or at > after]
        if not events:
            return
        deliveries = self._plan(events)
        task = asyncio.create_task(self._lifecycle(record, record.version, url, deliveries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _plan(self, events: list[float]) -> list[tuple[float, float]]:
        """(send at, state as of) for each delivery, in sending order."""
        config, rng = self._config, self._rng
        plan: list[tuple[float, float]] = []
        for at in events:
            copies = (
                2 if config.callback_duplicates and rng.random() < config.callback_duplicates else 1
            )
            for _ in range(copies):
                plan.append((at + rng.uniform(0.0, config.callback_delay), at))
            self._inspect().callbacks_duplicated += copies - 1
        plan.sort()
        if len(events) > 1 and config.callback_reorder and rng.random() < config.callback_reorder:
            # Held back until the last state change (no payload from the future),
            # then sent newest first: the final state, then the stale ones.
            delays = sorted(rng.uniform(0.0, config.callback_delay) for _ in plan)
            newest_first = sorted((of for _, of in plan), reverse=True)
            last = max(events)
            plan = [
                (last + 0.001 * i + delay, of)
                for i, (delay, of) in enumerate(zip(delays, newest_first, strict=True))
            ]
            self._inspect().callbacks_reordered += 1
        return plan

    async def _lifecycle(
        self, record: Record, version: int, url: str, deliveries: list[tuple[float, float]]
    ) -> None:
        for send_at, state_at in deliveries:
            await asyncio.sleep(max(0.0, send_at - time.monotonic()))
            if record.deleted or record.version != version:
                return
            await self._deliver(url, self._render(record, state_at))

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        assert self._session is not None
        attempts = self._config.callback_attempts
        for attempt in range(attempts):
            inspect = self._inspect()
            inspect.callbacks_sent += 1
            if attempt:
                inspect.callbacks_retried += 1
            try:
                async with self._session.post(url, json=payload) as response:
                    await response.read()
                    if response.status == 200:
                        self._inspect().callbacks_delivered += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("callback to %s failed: %s", url, exc)
            if attempt + 1 < attempts:
                await asyncio.sleep(self._config.callback_retry_delay)
        self._inspect().callbacks_failed += 1
