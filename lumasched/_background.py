"""Loops that run beside an object's users (heartbeats, a subscriber), supervised.

``RedisLimiter`` and ``ClaimStore`` are entered and exited by their users,
sometimes in different tasks (pytest fixtures do that), so their loops cannot
live in a task group the caller opens. They run in one anyio task group inside
a task of their own: a loop that raises cancels its siblings, is logged once
with its traceback, and is kept. The owner raises it from its next call
(``check``) and from its exit (``aclose``): a failure never vanishes, as it
would in ``gather(return_exceptions=True)``.

``Tolerance`` is the other half: how long a loop goes on through unexpected
errors (each logged in one line) before it gives up and raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from lumasched._clock import Clock

__all__ = ["Supervisor", "Tolerance"]

Loop = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Runs ``loops`` in one task group of their own (see the module docstring)."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self._logger = logger
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        """The error that stopped the loops, if one did."""

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, *loops: Loop) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._task = asyncio.create_task(self._run(loops), name=self.name)

    async def _run(self, loops: tuple[Loop, ...]) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for loop in loops:
                    tg.start_soon(loop)
        except Exception as exc:
            failure: BaseException = exc
            while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
                failure = failure.exceptions[0]
            self.failure = failure
            self._logger.error("%s stopped", self.name, exc_info=failure)

    def check(self) -> None:
        """Raise the error that stopped the loops, if one did."""
        if self.failure is not None:
            raise self.failure

    async def aclose(self) -> None:
        """Stop the loops and wait for them; then raise what stopped them, if anything."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # (cancelled before its task group started, the task ends cancelled)
            with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                await task
        self.check()


class Tolerance:
    """Unexpected errors a loop lives through, up to ``seconds`` in a row (on
    ``clock``); each is logged in one line, and past the budget ``failed``
    re-raises the error for the ``Supervisor`` to surface."""

    def __init__(self, what: str, seconds: float, clock: Clock, logger: logging.Logger) -> None:
        self.what = what
        self.seconds = seconds
        self._clock = clock
        self._logger = logger
        self._since: float | None = None

    def ok(self) -> None:
        self._since = None

    def failed(self, exc: Exception) -> None:
        """Log ``exc``; raise it if unexpected errors have lasted past the budget."""
        now = self._clock.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since >= self.seconds:
            raise exc
        self._logger.warning(
            "%s failed (%s: %s); retrying", self.what, type(exc).__name__, exc or "no message"
        )
