"""lumasched.testing as a user loads it: the fixtures in pytest-asyncio's default
strict mode (a separate pytest run), and FakeClock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from lumasched.limits import Family, FamilyLimits, InProcessLimiter, Limits
from lumasched.testing import FakeClock

USER_TESTS = """
from pathlib import Path

import pytest

from lumasched import ImageRequest


@pytest.mark.asyncio
async def test_generate_with_luma(luma):
    result = await luma.generate(ImageRequest("a fox in the snow"))
    assert Path(result.path).is_file()


@pytest.mark.asyncio
async def test_emulator_fixture(luma_emulator):
    assert luma_emulator.base_url.startswith("http://127.0.0.1:")


def test_env_fixture(luma_env):
    import os

    assert os.environ["LUMAAI_BASE_URL"] == luma_env.base_url
"""


@pytest.mark.slow
def test_fixtures_work_in_strict_mode(tmp_path: Path) -> None:
    """A user's suite in strict mode (pytest-asyncio's default) passes with our fixtures."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["lumasched.testing"]\n')
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    assert "mode=Mode.STRICT" in run.stdout  # the header pytest-asyncio prints


async def test_fake_clock_autojumps_on_sleep() -> None:
    """With autojump, sleeping moves virtual time at once."""
    clock = FakeClock(start=10.0)
    with anyio.fail_after(1):
        await clock.sleep(3600)
    assert clock.monotonic() == 3610.0


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    """Without autojump, advance() wakes each sleeper once its deadline passes, in order."""
    clock = FakeClock(start=0.0, autojump=False)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "late", 5.0)
        tg.start_soon(sleeper, "early", 2.0)
        await anyio.wait_all_tasks_blocked()
        await clock.advance(1.0)
        assert woke == []
        await clock.advance(10.0)
    assert woke == [("early", 2.0), ("late", 5.0)]
    assert clock.monotonic() == 11.0
    with pytest.raises(ValueError, match="forward"):
        await clock.advance(-1)


async def test_fake_clock_drives_a_limiter_window() -> None:
    """An in-process limiter on FakeClock grants a full window, then waits in virtual
    time only: the test takes no real seconds."""
    clock = FakeClock(start=0.0)
    limits = Limits(image=FamilyLimits(concurrency=10, requests=2, per_seconds=60.0))
    async with InProcessLimiter(limits, clock=clock) as limiter:
        with anyio.fail_after(2):
            for i in range(3):
                await limiter.acquire(Family.IMAGE, f"lease-{i}")
                await limiter.release(Family.IMAGE, f"lease-{i}")
    assert clock.monotonic() >= 60.0
