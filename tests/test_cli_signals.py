"""``python -m lumasched run`` as a real process: SIGTERM, and a reader that goes away."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from lumasched.cli import EXIT_TERMINATED
from lumasched.emulator import Emulator
from lumasched.store.journal import Journal
from tests import test_cli_process as proc
from tests._cli_fixtures import read_results

pytestmark = pytest.mark.slow

emu = proc.emu
ITEMS = proc.ITEMS


def _counts(tmp_path: Path) -> dict[str, int]:
    with Journal(tmp_path / "out" / "journal.sqlite") as journal:
        return journal.counts()


async def _rerun_finishes(emu: Emulator, tmp_path: Path) -> None:
    rerun = await proc._start(emu, tmp_path)
    stdout, stderr = await asyncio.wait_for(rerun.communicate(), 45)
    assert rerun.returncode == 0, (stdout.decode(), stderr.decode())
    assert emu.inspect.creates_total == len(ITEMS)
    assert emu.inspect.duplicate_creates == 0


async def test_sigterm_stops_creating_waits_for_in_flight_then_exits_143(
    emu: Emulator, tmp_path: Path
) -> None:
    """SIGTERM is the first Ctrl-C: no new creates, in-flight ones finish, exit 143."""
    process = await proc._start(emu, tmp_path)
    head = await proc._read_until(process, " created ", 4)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = head + stdout.decode()
    assert process.returncode == EXIT_TERMINATED, (text, stderr.decode())
    assert "SIGTERM: creating no more; waiting for 4 in flight" in text
    assert "terminated (SIGTERM): run the same command again to resume" in text
    assert "Traceback" not in text + stderr.decode()
    assert emu.inspect.creates_total == 4
    assert _counts(tmp_path).get("completed") == 4
    await _rerun_finishes(emu, tmp_path)


async def test_a_second_signal_after_sigterm_stops_at_once(emu: Emulator, tmp_path: Path) -> None:
    """SIGTERM then SIGINT: out at once, the in-flight generations journalled with their ids."""
    process = await proc._start(emu, tmp_path)
    await proc._read_until(process, " created ", 4)
    process.send_signal(signal.SIGTERM)
    await proc._read_until(process, "creating no more")  # the first one was handled
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == EXIT_TERMINATED, (stdout.decode(), stderr.decode())
    assert "second Ctrl-C: stopping now" in stdout.decode()
    assert _counts(tmp_path).get("submitted") == 4
    await _rerun_finishes(emu, tmp_path)


async def test_a_closed_stdout_goes_quiet_and_the_run_finishes(
    emu: Emulator, tmp_path: Path
) -> None:
    """`lumasched run ... | head -3`: no traceback; the batch still completes and is journalled."""
    process = await proc._start(emu, tmp_path)
    assert process.stdout is not None and process.stderr is not None
    for _ in range(3):
        await asyncio.wait_for(process.stdout.readline(), 20)
    process._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
    stderr = await asyncio.wait_for(process.stderr.read(), 45)
    await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""
    assert _counts(tmp_path) == {"completed": len(ITEMS)}
    assert {r["state"] for r in read_results(tmp_path / "out").values()} == {"completed"}
