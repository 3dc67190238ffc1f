"""Pytest fixtures for testing code that talks to the Dream Machine API, offline.

Load them in a ``conftest.py`` (needs ``pytest`` and ``pytest-asyncio``)::

    pytest_plugins = ["lumasched.testing"]

or import the ones you use into a test module. Then::

    async def test_my_pipeline(luma_emulator):
        client = AsyncLumaAI(auth_token="test", base_url=luma_emulator.base_url)
        ...
        assert luma_emulator.inspect.rate_limited_total == 0

``luma_emulator`` runs fast (latencies divided by 1000: a 90 s video job takes
about 0.1 s) with the Build-tier limits. Override ``luma_emulator_config`` to
change anything, e.g. tighter limits or a failure rate::

    @pytest.fixture
    def luma_emulator_config():
        return EmulatorConfig(speed=1000, failure_rate=0.2, seed=7)

``luma_env`` also points ``LUMAAI_BASE_URL`` / ``LUMAAI_API_KEY`` at the
emulator, for code that builds its client from the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from lumasched.emulator import Emulator, EmulatorConfig

__all__ = [
    "DEFAULT_TEST_API_KEY",
    "fast_emulator_config",
    "luma_emulator",
    "luma_emulator_config",
    "luma_env",
]

DEFAULT_TEST_API_KEY = "lm-test-key"


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
