"""``DIR/results.jsonl`` across runs: nothing finished before is ever dropped."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from lumasched._config import Settings
from lumasched.cli import _progress, _runner
from lumasched.emulator import Emulator
from lumasched.limits import Family
from lumasched.manifest import Manifest
from lumasched.store.results import ResultsWriter
from tests._cli_fixtures import (
    API_KEY,
    FAST_LIMITS,
    LIMITS_TOML,
    emulator_config,
    read_results,
    write_jsonl,
)

ITEMS = [
    {"id": f"shot-{n:02d}", "model": "photon-flash-1", "prompt": f"a lighthouse, take {n}"}
    for n in range(6)
]


@pytest_asyncio.fixture
async def emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with Emulator(emulator_config(fixed_latency=0.5)) as emulator:
        monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
        monkeypatch.setenv("LUMAAI_BASE_URL", emulator.base_url)
        monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
        yield emulator


class _StoppedAtOnce(_progress.LogDisplay):
    """A terminal whose user presses Ctrl-C twice the moment the run starts."""

    def start(self, scheduler: Any, out_dir: Path) -> None:
        super().start(scheduler, out_dir)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)


async def _run_batch(tmp_path: Path, items: list[dict[str, Any]], display_type: type) -> Any:
    manifest = Manifest(write_jsonl(tmp_path / "m.jsonl", items))
    manifest.check()
    out = tmp_path / "out"
    options = _runner.RunOptions(
        manifest=manifest,
        out_dir=out,
        journal_path=out / "journal.sqlite",
        results_path=out / "results.jsonl",
        limits=FAST_LIMITS,
        settings=Settings.from_env(),
        total=len(items),
    )
    display = display_type(
        limits=FAST_LIMITS, totals={Family.IMAGE: len(items)}, file=io.StringIO()
    )
    return await _runner.run_batch(options, display)


async def test_rerun_stopped_at_once_keeps_every_earlier_line(
    emu: Emulator, tmp_path: Path
) -> None:
    """A rerun stopped before it reports anything (Ctrl-C twice) leaves every item
    finished before in results.jsonl, once each."""
    first = await _run_batch(tmp_path, ITEMS[:4], _progress.LogDisplay)
    assert first.completed == 4
    before = read_results(tmp_path / "out")

    rerun = await _run_batch(tmp_path, ITEMS, _StoppedAtOnce)
    assert rerun.interrupted
    assert read_results(tmp_path / "out") == before


async def test_sigkilled_rerun_keeps_every_line_once(emu: Emulator, tmp_path: Path) -> None:
    """A rerun killed with SIGKILL mid-batch leaves results.jsonl with every item
    finished before it, and each item at most once."""
    first = await _run_batch(tmp_path, ITEMS[:4], _progress.LogDisplay)
    assert first.completed == 4
    before = read_results(tmp_path / "out")
    more = ITEMS + [
        {"id": f"late-{n}", "model": "ray-flash-2", "prompt": f"a slow pan, take {n}"}
        for n in range(8)
    ]
    write_jsonl(tmp_path / "m.jsonl", more)
    (tmp_path / "limits.toml").write_text(LIMITS_TOML)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lumasched",
        "run",
        str(tmp_path / "m.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--limits",
        str(tmp_path / "limits.toml"),
        "--no-progress",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while emu.inspect.creates_total < 4 + 3:
        assert time.monotonic() < deadline, "the rerun never got going"
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    await process.communicate()
    assert process.returncode == -signal.SIGKILL

    after = read_results(tmp_path / "out")
    assert {key: after[key] for key in before} == before
    assert set(after) <= {item["id"] for item in more}


def _line(key: str, state: str = "completed", sha: str = "aa") -> dict[str, Any]:
    return {
        "id": key,
        "state": state,
        "generation_id": f"gen-{key}",
        "path": f"out/{key}.jpg" if state == "completed" else None,
        "sha256": sha if state == "completed" else None,
        "bytes": 3 if state == "completed" else None,
        "failure_reason": None if state == "completed" else "download failed",
        "timings": {"queued": None, "created": None, "completed": None, "downloaded": None},
    }


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_outcome_is_not_written_twice(tmp_path: Path) -> None:
    """An item a rerun reports again with the same outcome keeps its one line."""
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(_line("a"))
    writer.close()
    again = ResultsWriter(path)
    again.write({**_line("a"), "timings": {"queued": "2025-01-01T00:00:00.000+00:00"}})
    again.write(_line("b"))
    again.close()
    assert _lines(path) == [_line("a"), _line("b")]


def test_changed_outcome_replaces_the_line_when_the_run_ends(tmp_path: Path) -> None:
    """An item whose outcome changed keeps its old line until the run ends, then
    the new one takes its place (never two lines for one item)."""
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(_line("a", "failed"))
    writer.write(_line("b"))
    writer.close()
    again = ResultsWriter(path)
    again.write(_line("a"))
    assert _lines(path) == [_line("a", "failed"), _line("b")]
    again.close()
    assert _lines(path) == [_line("a"), _line("b")]


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    """A last line half written when a run was killed is dropped (its item is
    listed again when reported); duplicate lines are folded into one."""
    path = tmp_path / "results.jsonl"
    whole = json.dumps(_line("a"))
    path.write_text(whole + "\n" + whole + "\n" + json.dumps(_line("b"))[:40])
    writer = ResultsWriter(path)
    writer.write(_line("b"))
    writer.close()
    assert _lines(path) == [_line("a"), _line("b")]
