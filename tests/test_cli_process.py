"""``python -m lumasched run`` as a real process: SIGKILL and Ctrl-C, then resume."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lumasched.emulator import Emulator
from lumasched.store.journal import Journal
from tests._cli_fixtures import (
    API_KEY,
    LIMITS_TOML,
    emulator_config,
    read_results,
    write_jsonl,
)

pytestmark = pytest.mark.slow

ITEMS = [
    {"id": f"clip-{n:02d}", "model": "ray-flash-2", "prompt": f"shot number {n}"} for n in range(12)
]


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[Emulator]:
    # Every job takes 0.6 s and 4 run at once: creates leave in waves 0.6 s
    # apart, so a signal sent just after a wave lands between creates.
    async with Emulator(emulator_config(fixed_latency=0.6)) as emulator:
        yield emulator


def _env(emu: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LUMAAI_API_KEY=API_KEY, LUMAAI_BASE_URL=emu.base_url, PYTHONUNBUFFERED="1")
    env.pop("LUMASCHED_REDIS_URL", None)
    return env


async def _start(emu: Emulator, tmp_path: Path) -> asyncio.subprocess.Process:
    manifest = tmp_path / "m.jsonl"
    if not manifest.exists():
        write_jsonl(manifest, ITEMS)
        (tmp_path / "limits.toml").write_text(LIMITS_TOML)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lumasched",
        "run",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--limits",
        str(tmp_path / "limits.toml"),
        env=_env(emu),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_until(
    process: asyncio.subprocess.Process, marker: str, count: int = 1, timeout: float = 30.0
) -> str:
    """The run's stdout up to its ``count``-th line holding ``marker``. What the run
    printed proves it got there (a ``created`` line: the id is journalled); the
    emulator counting a create does not, and a sleep after it can overshoot."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while sum(marker in line for line in lines) < count:
            line = (await process.stdout.readline()).decode()
            assert line, f"stdout closed before {count} x {marker!r}: {''.join(lines)}"
            lines.append(line)
    return "".join(lines)


async def test_sigkill_then_rerun_finishes_without_duplicates(
    emu: Emulator, tmp_path: Path
) -> None:
    """A run killed with SIGKILL mid-batch resumes: every item done, none created twice."""
    process = await _start(emu, tmp_path)
    await _read_until(process, " created ", 4)
    process.send_signal(signal.SIGKILL)
    await process.communicate()
    assert process.returncode == -signal.SIGKILL
    before = emu.inspect.creates_total
    assert before < len(ITEMS)

    rerun = await _start(emu, tmp_path)
    stdout, stderr = await asyncio.wait_for(rerun.communicate(), 45)
    assert rerun.returncode == 0, (stdout.decode(), stderr.decode())
    assert emu.inspect.creates_total == len(ITEMS)
    assert emu.inspect.duplicate_creates == 0
    results = read_results(tmp_path / "out")
    assert sorted(results) == [item["id"] for item in ITEMS]
    assert {record["state"] for record in results.values()} == {"completed"}


async def test_ctrl_c_waits_for_in_flight_then_exits_130(emu: Emulator, tmp_path: Path) -> None:
    """First Ctrl-C: no new creates, in-flight ones finish, exit 130; a rerun does the rest."""
    process = await _start(emu, tmp_path)
    head = await _read_until(process, " created ", 4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = head + stdout.decode()
    assert process.returncode == 130, (text, stderr.decode())
    assert "Ctrl-C: creating no more; waiting for 4 in flight" in text
    created = emu.inspect.creates_total
    assert created == 4
    assert "interrupted: run the same command again to resume" in text
    with Journal(tmp_path / "out" / "journal.sqlite") as journal:
        counts = journal.counts()
    assert counts.get("completed") == 4

    rerun = await _start(emu, tmp_path)
    stdout, _ = await asyncio.wait_for(rerun.communicate(), 45)
    assert rerun.returncode == 0
    assert emu.inspect.creates_total == len(ITEMS)
    assert emu.inspect.duplicate_creates == 0


async def test_piped_output_is_plain_timestamped_lines(emu: Emulator, tmp_path: Path) -> None:
    """Without a terminal: one timestamped line per event, no escape codes, then the summary."""
    process = await _start(emu, tmp_path)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 45)
    assert process.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert "\x1b[" not in text
    lines = text.splitlines()
    summary = lines.index("lumasched run summary")
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (created|completed|progress) ")
    assert all(stamp.match(line) for line in lines[:summary]), lines[:summary]
    assert sum(" completed " in line for line in lines[:summary]) == len(ITEMS)
    assert any(line.startswith("elapsed ") for line in lines[summary:])


async def test_second_ctrl_c_stops_at_once_and_rerun_resumes(emu: Emulator, tmp_path: Path) -> None:
    """Ctrl-C twice exits 130 at once; a rerun polls the in-flight jobs, never re-creating them."""
    process = await _start(emu, tmp_path)
    await _read_until(process, " created ", 4)
    process.send_signal(signal.SIGINT)
    await _read_until(process, "creating no more")  # the first one was handled
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 130, (stdout.decode(), stderr.decode())
    assert "second Ctrl-C: stopping now" in stdout.decode()
    with Journal(tmp_path / "out" / "journal.sqlite") as journal:
        submitted = journal.counts().get("submitted", 0)
    assert submitted == 4, "the in-flight generations are journalled with their ids"

    rerun = await _start(emu, tmp_path)
    stdout, _ = await asyncio.wait_for(rerun.communicate(), 45)
    assert rerun.returncode == 0, stdout.decode()
    assert "resumed     clip-00 (polling" in stdout.decode()
    assert emu.inspect.creates_total == len(ITEMS)
    assert emu.inspect.duplicate_creates == 0


async def test_two_runs_on_one_folder_the_second_is_refused(emu: Emulator, tmp_path: Path) -> None:
    """A second run of the same command while the first runs exits 2 at once, naming the
    first (pid, host, since); it sends nothing, so nothing is created twice."""
    first = await _start(emu, tmp_path)
    await _read_until(first, " created ", 1)  # it holds the folder's lock
    # Stopped, it keeps the lock but cannot finish the batch before the second run
    # (slow to start on a busy machine) asks for it.
    first.send_signal(signal.SIGSTOP)
    try:
        second = await _start(emu, tmp_path)
        stdout, stderr = await asyncio.wait_for(second.communicate(), 20)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, (stdout.decode(), stderr.decode())
    text = stderr.decode()
    assert "in use by another lumasched run" in text
    assert f"pid {first.pid} on " in text and " since " in text
    assert "Traceback" not in text
    assert first.returncode is None, "the first run goes on"
    stdout, stderr = await asyncio.wait_for(first.communicate(), 45)
    assert first.returncode == 0, (stdout.decode(), stderr.decode())
    assert emu.inspect.creates_total == len(ITEMS)
    assert emu.inspect.duplicate_creates == 0
    assert {r["state"] for r in read_results(tmp_path / "out").values()} == {"completed"}
