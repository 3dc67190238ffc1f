"""``lumasched run`` at the edges, in-process: a server that misbehaves in every way
at once, a journal whose disk fills up, and the new options' bad values."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from lumasched import cli
from lumasched._config import Settings
from lumasched.cli import EXIT_FAILED, EXIT_OK, EXIT_STORAGE, EXIT_USAGE, _console, parse_size
from lumasched.store.journal import Journal
from tests import _cli_fixtures as fx
from tests._broken_server import ThreadedBrokenAPI, dumps, item
from tests._cli_fixtures import ThreadedEmulator, read_results, write_jsonl

emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file


def run(*args: str | Path) -> int:
    return cli.main([str(a) for a in args])


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedBrokenAPI]:
    server = ThreadedBrokenAPI()
    monkeypatch.setenv("LUMAAI_API_KEY", "k")
    monkeypatch.setenv("LUMAAI_BASE_URL", server.base_url)
    monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
    monkeypatch.setattr("lumasched.engine._following.ASSET_REREAD_DELAYS", (0.01, 0.02))
    real_settings = _console.settings_from

    def small_bounds(args: Any, *, need_key: bool = True) -> Settings:
        # The defaults (8 MiB, 90 s) behave the same, only slower to reach.
        settings = real_settings(args, need_key=need_key)
        return attrs.evolve(settings, max_response_bytes=256 * 1024, request_deadline=0.4)

    monkeypatch.setattr(_console, "settings_from", small_bounds)
    try:
        yield server
    finally:
        server.close()


def test_a_misbehaving_server_ends_every_item_with_its_reason(
    broken: ThreadedBrokenAPI,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Endless, trickling, redirecting, odd and asset-less answers: the run ends by itself,
    exit 1, each item failed with a one-line reason, nothing written outside --out."""
    modes = [
        "ok",
        "huge-body",
        "trickle",
        "redirect",
        "no-asset",
        "odd-state",
        "endless-asset",
        "huge-asset",
        "redirect-asset",
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(dumps([item(mode, mode) for mode in modes]))
    out = tmp_path / "out"
    code = run(
        "run", manifest, "--out", out, "--limits", limits_file, "--no-progress",
        "--job-timeout", "2", "--max-asset-size", "1MB",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == EXIT_FAILED, captured
    assert "Traceback" not in captured.out + captured.err
    results = read_results(out)
    assert results["ok"]["state"] == "completed" and Path(results["ok"]["path"]).is_file()
    reasons = {key: str(r["failure_reason"]) for key, r in results.items() if key != "ok"}
    assert all(results[key]["state"] == "failed" for key in reasons)
    for key in ("huge-body", "trickle", "redirect", "odd-state"):
        assert reasons[key].startswith("no terminal state after 2s"), reasons
    assert reasons["no-asset"].startswith("completed without an asset")
    assert "more than the 1000000-byte cap" in reasons["endless-asset"]
    assert "is 1000000000000 bytes" in reasons["huge-asset"]
    assert "redirect loop" in reasons["redirect-asset"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limits.toml", "m.jsonl", "out"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".gallery",  # the page's thumbnails
        "index.html",  # the page of the run
        "journal.sqlite",
        "journal.sqlite.lock",  # the run's ownership of the folder (empty once it ends)
        "ok.mp4",
        "results.jsonl",
    ]
    for key in reasons:
        assert f"{key}: " in captured.out  # the summary lists each failure


LONG = "a slow pan over a quiet harbour at dawn, " * 60


def _shots(count: int, prompt: str = "shot number") -> list[dict[str, Any]]:
    return [
        {"id": f"shot-{n:02d}", "model": "ray-flash-2", "prompt": f"{prompt} {n}"}
        for n in range(count)
    ]


def _run_out_of_space(
    emu: ThreadedEmulator, items: list[dict[str, Any]], out: Path, limits: Path, capsys: Any
) -> tuple[int, str]:
    """Run once on a disk that fills up; return the exit status and all it printed."""
    manifest = write_jsonl(out.parent / "m.jsonl", items)
    code = run("run", manifest, "--out", out, "--limits", limits, "--no-progress")
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert emu.inspect.creates_total < len(items)
    return code, captured.out + captured.err


def _rerun_completes(
    emu: ThreadedEmulator, items: list[dict[str, Any]], out: Path, limits: Path
) -> None:
    """With space again, the same command completes every item, none created twice."""
    manifest = out.parent / "m.jsonl"
    assert run("run", manifest, "--out", out, "--limits", limits, "--no-progress") == EXIT_OK
    assert emu.inspect.creates_total == len(items)
    assert emu.inspect.duplicate_creates == 0
    results = read_results(out)
    assert sorted(results) == [item["id"] for item in items]
    for record in results.values():
        data = Path(record["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]


def test_a_full_journal_disk_stops_the_run_and_a_rerun_finishes(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No space for the journal (SQLite's page limit): one line, exit 74, nothing more
    created; once space is back, the same command completes everything."""
    items = _shots(12, LONG)
    out = tmp_path / "out"
    real_init = Journal.__init__

    def filling(self: Journal, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages + 4}")

    monkeypatch.setattr(Journal, "__init__", filling)
    code, printed = _run_out_of_space(cli_env, items, out, limits_file, capsys)
    assert code == EXIT_STORAGE
    errors = [line for line in printed.splitlines() if line.startswith("lumasched:")]
    assert errors == [
        f"lumasched: no space left on {out} (journal); nothing more was created: free the "
        "space (or fix the permissions) and run the same command again to resume"
    ]
    monkeypatch.setattr(Journal, "__init__", real_init)
    _rerun_completes(cli_env, items, out, limits_file)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KiB tmpfs (needs permission to mount: skipped where it is refused)."""
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


def test_a_real_full_disk_then_a_rerun_with_space_completes_everything(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    small_disk: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--out on a tmpfs that fills up: a one-line reason, no traceback; once the disk is
    bigger, the same command completes every item and creates none twice."""
    items = _shots(40)
    out = small_disk / "out"
    code, printed = _run_out_of_space(cli_env, items, out, limits_file, capsys)
    assert code in (EXIT_FAILED, EXIT_STORAGE)
    assert f"no space left on {out}" in printed
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    _rerun_completes(cli_env, items, out, limits_file)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("20MB", 20_000_000), ("4GiB", 4 * 1024**3), ("1.5 kb", 1500)],
)
def test_sizes_parse_in_bytes_and_units(text: str, size: int) -> None:
    """--max-asset-size takes plain bytes, decimal and binary units."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-asset-size", "20XB", "--max-asset-size '20XB': not a size"),
        ("--max-asset-size", "0", "--max-asset-size '0': must be at least 1 byte"),
        ("--job-timeout", "0", "--job-timeout 0: must be > 0 seconds"),
        ("--job-timeout", "nan", "--job-timeout nan: must be > 0 seconds"),
    ],
)
def test_bad_bounds_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    """A bad --max-asset-size or --job-timeout: exit 2 with one line, nothing sent."""
    manifest = write_jsonl(tmp_path / "m.jsonl", [fx.MIXED_ITEMS[0]])
    code = run("run", manifest, "--out", tmp_path / "out", "--emulator", option, value)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith(f"lumasched: {message}") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
