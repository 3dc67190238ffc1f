"""An offline emulator of the Luma Dream Machine API (aiohttp.web).

It serves every endpoint of the real API at ``http://HOST:PORT/dream-machine/v1``
with the same shapes and status codes, runs jobs through queued -> dreaming ->
completed | failed on a latency model, enforces the account's limits with 429s,
charges and refunds credits, sends callbacks, serves real image and video files,
injects faults on request, and records what clients did (``Emulator.inspect``,
``GET /_emulator/stats``). See docs/emulator.md.
"""

from __future__ import annotations

from lumasched.emulator._app import API_PREFIX, CAMERA_MOTIONS
from lumasched.emulator._config import DEFAULT_BLACKLIST, ROUTES, EmulatorConfig, Faults
from lumasched.emulator._emulator import Emulator
from lumasched.emulator._failures import FAILURE_REASONS
from lumasched.emulator._stats import FamilyStats, Inspector
from lumasched.emulator._validate import CONCEPTS

__all__ = [
    "API_PREFIX",
    "CAMERA_MOTIONS",
    "CONCEPTS",
    "DEFAULT_BLACKLIST",
    "FAILURE_REASONS",
    "ROUTES",
    "Emulator",
    "EmulatorConfig",
    "FamilyStats",
    "Faults",
    "Inspector",
    "main",
]


def __getattr__(name: str) -> object:
    # ``lumasched.emulator.main`` stays importable; the command itself prints, so
    # it lives in cli/ and is imported only when asked for.
    if name == "main":
        from lumasched.cli._emulator import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
