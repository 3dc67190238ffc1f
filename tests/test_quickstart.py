"""The README's promises: the quick-start batch and the library example work as shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lumasched import cli
from lumasched.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent


def _results(out: Path) -> dict[str, dict[str, object]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


def test_quickstart_batch_runs_and_resumes_without_creating_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README quick start puts every item on disk, verified; a rerun creates nothing."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    out = tmp_path / "out"
    args = ["run", str(ROOT / "examples" / "quickstart.jsonl"), "--out", str(out), "--emulator"]
    assert cli.main([*args, "--emulator-speed", "2000", "--no-progress"]) == 0
    first = capsys.readouterr().out
    results = _results(out)
    manifest_ids = {
        json.loads(line)["id"]
        for line in (ROOT / "examples" / "quickstart.jsonl").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert set(results) == manifest_ids
    assert all(row["state"] == "completed" for row in results.values())
    for row in results.values():
        assert Path(str(row["path"])).stat().st_size == row["bytes"]
    assert "creates 10," in first
    page = (out / "index.html").read_text()
    assert all(f'id="item-{key}"' in page for key in manifest_ids), "the gallery shows every item"
    assert f"gallery: {out / 'index.html'}" in first, "the summary says where the page is"

    assert cli.main([*args, "--emulator-speed", "2000", "--no-progress"]) == 0
    assert "creates 0," in capsys.readouterr().out


async def test_readme_library_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's library example runs as printed, against the emulator; run twice,
    it creates each generation once (the journal is on by default)."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Luma(" in b)
    code = block.replace("anyio.run(main)", "").replace(
        'out_dir="out"', f"out_dir={str(tmp_path)!r}"
    )
    assert str(tmp_path) in code
    async with Emulator(speed=2000) as emu:
        monkeypatch.setenv("LUMAAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("LUMAAI_API_KEY", "lm-readme")
        for _ in range(2):
            namespace: dict[str, object] = {}
            exec(compile(code, "README.md", "exec"), namespace)
            await namespace["main"]()  # type: ignore[operator]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["bear", "bear-1080p"] * 2
    assert printed[:2] == printed[2:]
    assert (tmp_path / "bear-1080p.mp4").exists()
    assert emu.inspect.creates_total == 2
