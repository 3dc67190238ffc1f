"""Fixtures for the CLI tests: an emulator on its own thread (so the CLI's own
``asyncio.run`` can drive it in-process), small limits, and manifest helpers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lumasched.emulator import Emulator, EmulatorConfig
from lumasched.limits import FamilyLimits, Limits

API_KEY = "lm-cli-test-key"

# Small windows so a test batch is never slowed down for long, and the same
# limits on both sides so the emulator 429s any client that overshoots. The
# CLI's window is 20% longer than the emulator's: its own 3% margin (30 ms on a
# 1 s window) is less than the event-loop lag between a grant and its request's
# arrival on a loaded machine (real windows are 60 s, with a 1.8 s margin).
FAST_LIMITS = Limits(
    video=FamilyLimits(concurrency=4, requests=8, per_seconds=1.0),
    image=FamilyLimits(concurrency=6, requests=12, per_seconds=1.0),
)
LIMITS_TOML = """\
[video]
concurrency = 4
requests = 8
per_seconds = 1.2

[image]
concurrency = 6
requests = 12
per_seconds = 1.2
"""


class ThreadedEmulator:
    """An ``Emulator`` serving from a background thread's event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.emu: Emulator = self._call(self._start(config))

    async def _start(self, config: EmulatorConfig) -> Emulator:
        emu = Emulator(config)
        await emu.start()
        return emu

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def base_url(self) -> str:
        return self.emu.base_url

    @property
    def inspect(self) -> Any:
        return self.emu.inspect

    def close(self) -> None:
        self._call(self.emu.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def emulator_config(**overrides: Any) -> EmulatorConfig:
    fields: dict[str, Any] = {
        "speed": 2000.0,
        "jitter": 0.0,
        "seed": 1,
        "api_key": API_KEY,
        "limits": FAST_LIMITS,
    }
    fields.update(overrides)
    return EmulatorConfig(**fields)


@pytest.fixture
def emulator() -> Iterator[ThreadedEmulator]:
    threaded = ThreadedEmulator(emulator_config())
    try:
        yield threaded
    finally:
        threaded.close()


@pytest.fixture
def cli_env(emulator: ThreadedEmulator, monkeypatch: pytest.MonkeyPatch) -> ThreadedEmulator:
    """The environment a user would set: key and base URL of the emulator."""
    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    monkeypatch.setenv("LUMAAI_BASE_URL", emulator.base_url)
    monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
    return emulator


@pytest.fixture
def limits_file(tmp_path: Path) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text(LIMITS_TOML)
    return path


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    by_id = {record["id"]: record for record in records}
    assert len(by_id) == len(records), "one line per item"
    return by_id


MIXED_ITEMS: list[dict[str, Any]] = [
    {"id": "cat", "model": "photon-1", "prompt": "a cat asleep on a windowsill"},
    {"id": "owl", "model": "photon-flash-1", "prompt": "a snowy owl", "format": "png"},
    {"id": "sea", "model": "ray-flash-2", "prompt": "waves on a beach", "resolution": "540p"},
    {"id": "bear", "model": "ray-2", "prompt": "a teddy bear walks into a clearing"},
    {
        "id": "bear-2",
        "model": "ray-2",
        "prompt": "the teddy bear sits down",
        "keyframes": {"frame0": {"type": "generation", "ref": "bear"}},
    },
    {"id": "bear-hd", "type": "upscale", "source": "bear-2", "resolution": "1080p"},
]
