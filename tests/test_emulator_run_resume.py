"""``lumasched run --emulator`` killed mid-batch resumes on the emulator's state file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests._cli_fixtures import LIMITS_TOML, read_results, write_jsonl

pytestmark = pytest.mark.slow

ITEMS = [
    {"id": f"wave-{n}", "model": "ray-flash-2", "prompt": f"wave number {n} breaks"}
    for n in range(8)
]


async def _run(tmp_path: Path) -> asyncio.subprocess.Process:
    manifest = tmp_path / "m.jsonl"
    if not manifest.exists():
        write_jsonl(manifest, ITEMS)
        (tmp_path / "limits.toml").write_text(LIMITS_TOML)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("LUMAAI_API_KEY", "LUMAAI_BASE_URL", "LUMASCHED_REDIS_URL"):
        env.pop(name, None)
    # ray-flash-2 at speed 40: about 0.85 s per job, 4 at once.
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lumasched",
        "run",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--emulator",
        "--emulator-speed",
        "40",
        "--limits",
        str(tmp_path / "limits.toml"),
        "--no-progress",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _generations(state: Path) -> list[tuple[str, str, float]]:
    """(id, prompt, done_at as UNIX time) of every generation in the state file."""
    if not state.exists():
        return []
    with contextlib.closing(sqlite3.connect(state, timeout=5)) as conn:
        try:
            rows = conn.execute("SELECT id, body, done_at FROM generations").fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
    return [(gen_id, json.loads(body)["prompt"], done_at) for gen_id, body, done_at in rows]


async def test_sigkill_mid_batch_then_rerun_completes_every_item_once(tmp_path: Path) -> None:
    """Generations in flight at a SIGKILL are polled by the rerun (not 404), and
    the state file shows exactly one generation per item."""
    state = tmp_path / "out" / "emulator-state.sqlite"
    process = await _run(tmp_path)
    deadline = time.monotonic() + 20
    while len(_generations(state)) < 4:
        assert time.monotonic() < deadline, "the run never got going"
        await asyncio.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    await process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = time.time()
    before = _generations(state)
    assert len(before) < len(ITEMS)
    assert any(done_at > killed_at for _, _, done_at in before), "none was in flight"

    rerun = await _run(tmp_path)
    stdout, stderr = await asyncio.wait_for(rerun.communicate(), 40)
    assert rerun.returncode == 0, (stdout.decode(), stderr.decode())

    after = _generations(state)
    per_prompt = Counter(prompt for _, prompt, _ in after)
    assert per_prompt == Counter(item["prompt"] for item in ITEMS)
    assert {gen_id for gen_id, _, _ in before} <= {gen_id for gen_id, _, _ in after}
    results = read_results(tmp_path / "out")
    assert sorted(results) == [item["id"] for item in ITEMS]
    assert {record["state"] for record in results.values()} == {"completed"}
    assert {r["generation_id"] for r in results.values()} == {g for g, _, _ in after}
