"""A real full disk: ``lumasched run --out`` on a tiny tmpfs (needs permission to
mount; skipped where it is refused, as in most containers)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumasched import cli
from lumasched.cli import EXIT_FAILED, EXIT_OK, EXIT_STORAGE
from tests import _cli_fixtures as fx
from tests._cli_fixtures import ThreadedEmulator, read_results, write_jsonl

emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount_point)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_then_a_rerun_with_space_completes_everything(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    small_disk: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No space under --out: one line per problem and no traceback; once the disk is
    bigger, the same command completes every item and creates none twice."""
    items = [
        {"id": f"shot-{n:02d}", "model": "ray-flash-2", "prompt": f"shot number {n}"}
        for n in range(40)
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    out = small_disk / "out"
    args = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file)]
    code = cli.main([*args, "--no-progress"])
    captured = capsys.readouterr()
    assert code in (EXIT_FAILED, EXIT_STORAGE), captured
    assert "Traceback" not in captured.out + captured.err
    assert f"no space left on {out}" in captured.out + captured.err

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert cli.main([*args, "--no-progress"]) == EXIT_OK
    assert cli_env.inspect.creates_total == len(items)
    assert cli_env.inspect.duplicate_creates == 0
    results = read_results(out)
    assert sorted(results) == [item["id"] for item in items]
    for record in results.values():
        data = Path(record["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
