"""LumaSync and generate_sync: blocking use from a plain script and from inside a
running event loop (as in Jupyter), against an emulator on its own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lumasched import ImageRequest, JobState, LumaSync, generate_sync
from lumasched.emulator import Emulator
from lumasched.errors import ValidationError
from lumasched.testing import fast_emulator_config

API_KEY = "lm-sync-test"


@contextmanager
def emulator_thread() -> Iterator[Emulator]:
    """An emulator serving from a thread of its own, so blocking calls here never
    stall it."""
    started: concurrent.futures.Future[tuple[Emulator, asyncio.AbstractEventLoop]] = (
        concurrent.futures.Future()
    )
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with Emulator(fast_emulator_config(api_key=API_KEY)) as emu:
            started.set_result((emu, asyncio.get_running_loop()))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    emu, loop = started.result(timeout=10)
    try:
        yield emu
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with emulator_thread() as emulator:
        yield emulator


SCRIPT = """
import sys
import lumasched

result = lumasched.generate_sync(lumasched.ImageRequest("a fox in the snow"), out_dir=sys.argv[1])
print(result.path)
"""


@pytest.mark.slow
def test_generate_sync_from_a_plain_script(emu: Emulator, tmp_path: Path) -> None:
    """One call in a script writes the file; run twice, it creates nothing more."""
    script = tmp_path / "make.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "LUMAAI_API_KEY": API_KEY, "LUMAAI_BASE_URL": emu.base_url}
    paths = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "out")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        paths.append(run.stdout.strip())
    assert paths[0] == paths[1] and Path(paths[0]).is_file()
    assert emu.inspect.creates_total == 1


def test_sync_use_inside_a_running_loop(emu: Emulator, tmp_path: Path) -> None:
    """Called from a coroutine (a notebook cell has a running loop), the sync facade
    neither raises RuntimeError nor needs the caller's loop."""

    async def notebook_cell() -> tuple[str | None, JobState | None, str | None]:
        with LumaSync(tmp_path, api_key=API_KEY, base_url=emu.base_url) as luma:
            first = luma.generate(ImageRequest("an owl at night"), key="owl")
            future = luma.submit(ImageRequest("a heron at dawn"), key="heron")
            second = future.result(timeout=30)
            return first.path, luma.status("owl"), second.path

    first, state, second = asyncio.run(notebook_cell())
    assert Path(first or "").is_file() and Path(second or "").is_file()
    assert state is JobState.COMPLETED


def test_sync_submit_raises_validation_at_once(emu: Emulator, tmp_path: Path) -> None:
    """A bad request raises in the caller's thread, before anything is sent."""
    with (
        LumaSync(tmp_path, api_key=API_KEY, base_url=emu.base_url) as luma,
        pytest.raises(ValidationError, match="aspect_ratio"),
    ):
        luma.submit(ImageRequest("a cat", aspect_ratio="2:1"))
    assert emu.inspect.creates_total == 0


def test_generate_sync_one_call(emu: Emulator, tmp_path: Path) -> None:
    """generate_sync returns the result with its file on disk, the journal beside it."""
    result = generate_sync(
        ImageRequest("a lighthouse"), out_dir=tmp_path, api_key=API_KEY, base_url=emu.base_url
    )
    assert Path(result.path or "").is_file() and (tmp_path / "journal.sqlite").is_file()


def test_open_errors_raise_in_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing key is raised by open(), not lost in the engine thread."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    luma = LumaSync(tmp_path)
    with pytest.raises(Exception, match="LUMAAI_API_KEY"):
        luma.open()
    with pytest.raises(RuntimeError, match="inside"):
        luma.status("x")
