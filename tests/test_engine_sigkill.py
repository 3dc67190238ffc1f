"""A batch process killed with SIGKILL (also in the middle of creates) and restarted
finishes every job exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from lumasched.engine.downloads import sha256_file
from lumasched.store.journal import Journal
from tests._engine_fixtures import emulator
from tests._sigkill_child import LIMITS

ROOT = Path(__file__).resolve().parent.parent
N = 15


def _spawn(base_url: str, tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests._sigkill_child",
            base_url,
            str(tmp / "j.db"),
            str(tmp / "out"),
            str(N),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
async def test_sigkill_mid_batch_then_resume_creates_each_job_once(tmp_path: Path) -> None:
    """SIGKILL twice (once while creates await their answer), restart: N creates, N files."""
    # Each create is accepted at once but answered only after 0.3 s: a kill then
    # leaves jobs whose generation exists but whose id never reached the journal.
    faults = {"create_response_delay": 0.3}
    async with emulator(limits=LIMITS, latency=0.8, faults=faults) as emu:
        for kill_after in (3, 9):
            child = _spawn(emu.base_url, tmp_path)
            try:
                with anyio.fail_after(20):
                    while emu.inspect.creates_total < kill_after:
                        assert child.poll() is None, child.stderr.read() if child.stderr else ""
                        await anyio.sleep(0.005)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
                assert child.stdout is not None and child.stderr is not None
                child.stdout.close()
                child.stderr.close()
            with Journal(tmp_path / "j.db") as journal:
                unresolved = [
                    r.key for r in journal.records() if r.intent_body and not r.generation_id
                ]
            if kill_after == 3:
                assert unresolved, "the first kill should land while a create awaits its answer"

        child = _spawn(emu.base_url, tmp_path)
        with anyio.fail_after(40):
            while child.poll() is None:
                await anyio.sleep(0.05)
        out, err = child.communicate()
        assert child.returncode == 0, err.decode()
        assert out.decode().strip() == "done"

        assert emu.inspect.creates_total == N
        assert emu.inspect.duplicate_creates == 0
    with Journal(tmp_path / "j.db") as journal:
        records = list(journal.records())
    assert {r.state for r in records} == {"completed"}
    assert len({r.generation_id for r in records}) == N
    for record in records:
        assert record.path is not None and sha256_file(Path(record.path)) == record.sha256
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        Path(r.path).name for r in records if r.path
    )
