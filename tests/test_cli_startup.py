"""The command starts light (issue #19's makespan counts process start): each
command loads what it uses, and a plain run none of the optional machinery."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("aiohttp", "lumasched.api._client", "lumasched.engine.scheduler", "rich", "yaml")
NOT_FOR_A_PLAIN_RUN = (
    "lumasched.emulator",
    "lumasched.claims",
    "lumasched.web",
    "lumasched.gallery.dashboard",
    "aiohttp.web",
    "redis",
    "prometheus_client",
    "opentelemetry",
    "aioboto3",
    "av",
    "yaml",
)


def _loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    script = textwrap.dedent(code) + (
        f"\nimport json, sys\nprint(json.dumps([n for n in {names!r} if n in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_help_loads_neither_the_client_nor_the_engine() -> None:
    """`lumasched --help` and `import lumasched` stay clear of aiohttp, the engine,
    rich and YAML."""
    code = """
        import contextlib, io
        from lumasched.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--help"]) == 0
    """
    assert _loaded_after(code, HEAVY) == []
    assert _loaded_after("import lumasched", HEAVY) == []


def test_a_plain_run_loads_no_optional_machinery(tmp_path: Path) -> None:
    """What `run` loads up front, and the gallery page it writes at the end, need
    neither the emulator, Redis, the claims, the dashboard, the exporters, S3, PyAV
    (a video's poster imports it when it is made) nor PyYAML (a YAML manifest does)."""
    code = f"""
        import pathlib
        import lumasched.cli._run, lumasched.cli._runner, lumasched.cli._progress
        from lumasched.gallery import write_gallery
        from lumasched.gallery._thumbs import Thumbnailer
        Thumbnailer(pathlib.Path({str(tmp_path)!r}))
    """
    assert _loaded_after(code, NOT_FOR_A_PLAIN_RUN) == []


def test_subpackages_load_on_first_use() -> None:
    """Laziness keeps what eager imports gave: after ``import lumasched`` its
    subpackages are reachable as attributes (``lumasched.api.dumps_body``), and a
    name that is neither a subpackage nor exported still raises AttributeError."""
    code = """
        import lumasched
        assert callable(lumasched.api.dumps_body)
        from lumasched.engine.scheduler import Scheduler
        assert lumasched.engine.scheduler.Scheduler is Scheduler is lumasched.Scheduler
        assert lumasched.errors.LumaError is lumasched.LumaError
        assert not hasattr(lumasched, "no_such_thing")
    """
    assert _loaded_after(code, ("lumasched.api", "lumasched.engine")) == [
        "lumasched.api",
        "lumasched.engine",
    ]


def test_pillow_waits_for_a_local_image_or_the_gallery() -> None:
    """Pillow (15 ms of start-up) is loaded to check a local input image or to make
    thumbnails, not to start a run."""
    code = "import lumasched.cli._run, lumasched.cli._runner, lumasched.cli._progress"
    assert _loaded_after(code, ("PIL",)) == []
