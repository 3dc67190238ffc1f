"""Bad input is reported in the order a user can act on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumasched import cli


def test_manifest_problems_come_before_a_missing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key, a broken manifest still gets its FILE:LINE report (exit 2), not
    only the missing-key message, so the user fixes the file before finding a key."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    manifest = tmp_path / "shots.jsonl"
    manifest.write_text('{"id": "a", "model": "ray-2", "promt": "hello there"}\n')
    assert cli.main(["run", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{manifest}:1: promt: unknown field" in err
    assert "no API key" not in err
    assert not (tmp_path / "out").exists()


def test_a_valid_manifest_without_a_key_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid manifest and no key: exit 2 with where to get a key and how to try the emulator."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    manifest = tmp_path / "shots.jsonl"
    manifest.write_text('{"id": "a", "model": "ray-2", "prompt": "hello there"}\n')
    assert cli.main(["run", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "LUMAAI_API_KEY" in err and "--emulator" in err


def test_dry_run_shows_sub_cent_prices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photon-flash-1 image in the dry-run plan costs $0.004, not a misleading $0.00."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    manifest = tmp_path / "shots.jsonl"
    manifest.write_text('{"id": "a", "model": "photon-flash-1", "prompt": "a fox in snow"}\n')
    assert cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "$0.004" in plan and "$0.00\n" not in plan
