"""Pytest fixtures for testing code that talks to the Dream Machine API, offline.

Load them in a ``conftest.py`` (needs ``pytest`` and ``pytest-asyncio``)::

    pytest_plugins = ["lumasched.testing"]

or import the ones you use into a test module. Then (the marker is needed in
pytest-asyncio's default strict mode, harmless in auto mode)::

    @pytest.mark.asyncio
    async def test_my_pipeline(luma):          # a Luma on the emulator, out_dir=tmp_path
        result = await luma.generate(ImageRequest("a fox"))
        assert Path(result.path).is_file()

    @pytest.mark.asyncio
    async def test_with_the_sdk(luma_emulator):
        client = AsyncLumaAI(auth_token="test", base_url=luma_emulator.base_url)
        ...
        assert luma_emulator.inspect.rate_limited_total == 0

``luma_emulator`` runs fast (latencies divided by 1000: a 90 s video job takes
about 0.1 s) with the Build-tier limits. Override ``luma_emulator_config`` to
change anything, e.g. tighter limits or a failure rate::

    @pytest.fixture
    def luma_emulator_config():
        return EmulatorConfig(speed=1000, failure_rate=0.2, seed=7)

``FakeClock`` is virtual time for the ``clock=`` seam of the limiters, the
poller and the scheduler: nothing waits for real seconds.

``luma_env`` also points ``LUMAAI_BASE_URL`` / ``LUMAAI_API_KEY`` at the
emulator, for code that builds its client from the environment.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import pytest_asyncio

from lumasched.emulator import Emulator, EmulatorConfig
from lumasched.facade import Luma

__all__ = [
    "DEFAULT_TEST_API_KEY",
    "FakeClock",
    "fast_emulator_config",
    "luma",
    "luma_emulator",
    "luma_emulator_config",
    "luma_env",
]

DEFAULT_TEST_API_KEY = "lm-test-key"


class FakeClock:
    """Virtual time, a ``Clock`` (``monotonic()`` and ``sleep()``) that never waits.

    With ``autojump`` (the default), a ``sleep(s)`` moves time forward by ``s``
    at once: right for code with one sleeper (a poll loop, a limiter's wait).
    Without it, sleepers wait until ``advance()`` moves time past their
    deadline, in deadline order, for tests that step time themselves.
    """

    def __init__(self, start: float = 1000.0, *, autojump: bool = True) -> None:
        self._now = start
        self.autojump = autojump
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now:.3f} sleepers={len(self._sleepers)}>"

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self.autojump:
            self._now += seconds
            await anyio.lowlevel.checkpoint()
            return
        woken = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        await woken.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline
        passes, each at its own time, and letting them run."""
        if seconds < 0:
            raise ValueError(f"time only moves forward (got {seconds!r})")
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, woken = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            woken.set()
            await anyio.lowlevel.checkpoint()
        self._now = target
        await anyio.lowlevel.checkpoint()


def fast_emulator_config(**overrides: object) -> EmulatorConfig:
    """The fixtures' default config (speed 1000, no jitter, seed 0) with ``overrides``."""
    fields: dict[str, object] = {"speed": 1000.0, "jitter": 0.0, "seed": 0}
    fields.update(overrides)
    return EmulatorConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def luma_emulator_config() -> EmulatorConfig:
    """The config ``luma_emulator`` starts with; override it in your conftest."""
    return fast_emulator_config()


@pytest_asyncio.fixture
async def luma_emulator(luma_emulator_config: EmulatorConfig) -> AsyncIterator[Emulator]:
    """A running emulator on a free port of 127.0.0.1, closed after the test."""
    async with Emulator(luma_emulator_config) as emu:
        yield emu


@pytest.fixture
def luma_env(luma_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """``luma_emulator`` with ``LUMAAI_BASE_URL`` and ``LUMAAI_API_KEY`` set to reach it."""
    monkeypatch.setenv("LUMAAI_BASE_URL", luma_emulator.base_url)
    monkeypatch.setenv("LUMAAI_API_KEY", luma_emulator.config.api_key or DEFAULT_TEST_API_KEY)
    return luma_emulator


@pytest_asyncio.fixture
async def luma(luma_emulator: Emulator, tmp_path: Path) -> AsyncIterator[Luma]:
    """A ``Luma`` on ``luma_emulator``, writing to ``tmp_path`` (journal included)."""
    async with Luma(
        tmp_path,
        api_key=luma_emulator.config.api_key or DEFAULT_TEST_API_KEY,
        base_url=luma_emulator.base_url,
    ) as facade:
        yield facade
