"""The ``lumasched`` command, run in-process against the emulator (on its own thread)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from lumasched import cli
from lumasched._config import API_KEY_HELP
from lumasched.store.journal import Journal
from tests import _cli_fixtures as fx
from tests import _redis_fixtures as redis_fx
from tests._cli_fixtures import (
    API_KEY,
    MIXED_ITEMS,
    ThreadedEmulator,
    read_results,
    write_jsonl,
)
from tests._redis_fixtures import RedisServer

# Fixtures used by name below.
redis_process = redis_fx.redis_process
emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str | Path) -> int:
    return cli.main([str(a) for a in args])


def test_mixed_manifest_runs_to_files(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Images, videos and a chain (extend, upscale) end as verified files and results lines."""
    manifest = write_jsonl(tmp_path / "mixed.jsonl", MIXED_ITEMS)
    out = tmp_path / "out"
    assert run("run", manifest, "--out", out, "--limits", limits_file) == 0
    results = read_results(out)
    assert set(results) == {item["id"] for item in MIXED_ITEMS}
    for item_id, record in results.items():
        assert record["state"] == "completed"
        path = Path(record["path"])
        assert path.parent == out and path.stem == item_id
        data = path.read_bytes()
        assert len(data) == record["bytes"]
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        assert record["timings"]["created"] and record["timings"]["downloaded"]
    assert Path(results["owl"]["path"]).suffix == ".png"
    assert Path(results["bear-hd"]["path"]).suffix == ".mp4"
    inspect = cli_env.inspect
    assert inspect.creates_total == len(MIXED_ITEMS)
    assert inspect.rate_limited_total == 0
    output = capsys.readouterr().out
    assert "lumasched run summary" in output
    assert API_KEY not in output


def test_rerun_resumes_without_creating_again(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path
) -> None:
    """Running the same command twice creates nothing the second time."""
    manifest = write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS[:3])
    out = tmp_path / "out"
    assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 0
    assert cli_env.inspect.creates_total == 3
    (out / "results.jsonl").unlink()
    assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 0
    assert cli_env.inspect.creates_total == 3
    assert {r["state"] for r in read_results(out).values()} == {"completed"}


def test_failed_generation_exits_1_and_is_listed(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A moderated prompt fails its item (and its dependants); the run exits 1 naming them."""
    items = [
        {"id": "ok", "model": "photon-flash-1", "prompt": "a quiet pond"},
        {"id": "bad", "model": "ray-flash-2", "prompt": "something blacklisted here"},
        {"type": "upscale", "id": "bad-hd", "source": "bad"},
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    out = tmp_path / "out"
    assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 1
    results = read_results(out)
    assert results["ok"]["state"] == "completed"
    assert results["bad"]["state"] == "failed"
    assert results["bad"]["failure_reason"] == "Contains blacklisted words"
    assert results["bad-hd"]["state"] == "failed"
    assert "bad" in results["bad-hd"]["failure_reason"]
    output = capsys.readouterr().out
    assert "bad: Contains blacklisted words" in output
    assert cli_env.inspect.creates_total == 2


BROKEN_MANIFESTS = {
    "typo.jsonl": ('{"id": "a", "model": "ray-2", "promt": "a typo"}\n', ":1: promt: "),
    "json.jsonl": ('{"model": "ray-2", "prompt": "fine prompt"}\n{"model": \n', ":2: invalid JSON"),
    "dup.jsonl": (
        '{"id": "a", "model": "photon-1", "prompt": "one"}\n'
        '{"id": "a", "model": "photon-1", "prompt": "two"}\n',
        ":2: id: duplicate id 'a'",
    ),
    "unsafe.jsonl": ('{"id": "../x", "model": "photon-1", "prompt": "abc"}\n', ":1: id: "),
    "enum.jsonl": (
        '{"model": "ray-2", "prompt": "abc", "resolution": "8k"}\n',
        ":1: resolution: ",
    ),
    "weight.jsonl": (
        '{"model": "photon-1", "prompt": "abc", '
        '"image_ref": [{"url": "https://x.test/a.jpg", "weight": 2}]}\n',
        ":1: image_ref[0].weight: ",
    ),
    "refs.jsonl": (
        '{"model": "photon-1", "prompt": "abc", "image_ref": ['
        + ",".join('{"url": "https://x.test/a.jpg"}' for _ in range(5))
        + "]}\n",
        ":1: image_ref: at most 4",
    ),
    "loop.jsonl": (
        '{"id": "v", "model": "ray-2", "prompt": "abc"}\n'
        '{"model": "ray-2", "prompt": "abc", "loop": true, '
        '"keyframes": {"frame1": {"type": "generation", "ref": "v"}}}\n',
        ":2: loop: ",
    ),
    "missing.jsonl": ('{"type": "upscale", "source": "nope"}\n', ":1: source: no item"),
    "cycle.jsonl": (
        '{"id": "a", "type": "audio", "source": "b"}\n'
        '{"id": "b", "type": "upscale", "source": "a"}\n',
        ": source: cycle: ",
    ),
    "bad.csv": ("model,prompt,loop\nray-2,a field,perhaps\n", ":2: loop: "),
    "bad.yaml": ("- model: ray-2\n  prompt: a field\n  duration: 5 seconds\n", ":3: duration: "),
    "broken.yaml": ("- model: ray-2\n  prompt: [oops\n", ": invalid YAML"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_MANIFESTS))
def test_manifest_errors_exit_2_and_send_nothing(
    name: str,
    cli_env: ThreadedEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every kind of manifest problem: FILE:LINE on stderr, exit 2, not one request."""
    text, expected = BROKEN_MANIFESTS[name]
    manifest = tmp_path / name
    manifest.write_text(text)
    assert run("run", manifest, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(str(manifest))]
    assert lines, err
    if expected.startswith(": "):
        assert any(expected in line for line in lines), err
    else:
        assert any(line.startswith(f"{manifest}{expected}") for line in lines), err
    assert "nothing was sent" in err
    assert sum(cli_env.inspect.requests_by_route.values()) == 0
    assert not (tmp_path / "out").exists()


def test_all_problems_reported_together(
    cli_env: ThreadedEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest with several broken lines lists each one in one run."""
    manifest = tmp_path / "many.jsonl"
    manifest.write_text("".join(text for text, _ in BROKEN_MANIFESTS.values() if "{" in text))
    assert run("run", manifest, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith(str(manifest))]) >= 8


def test_dry_run_prints_the_plan_and_sends_nothing(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--dry-run: counts per family and model, fastest time, cost vs credits; no create."""
    manifest = write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS)
    assert (
        run("run", manifest, "--out", tmp_path / "out", "--limits", limits_file, "--dry-run") == 0
    )
    out = capsys.readouterr().out
    assert "plan for" in out and "6 items" in out
    assert "photon-flash-1" in out and "ray-2" in out
    assert "fastest possible" in out
    assert "estimated cost: $" in out
    assert "credit balance: $" in out
    assert "nothing was sent" in out
    assert cli_env.inspect.creates_total == 0
    assert cli_env.inspect.gets == 0 and cli_env.inspect.lists == 0
    assert not (tmp_path / "out").exists()


def test_budget_stops_creating_and_rerun_continues(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--budget leaves the rest queued in the journal; a rerun with more budget finishes it."""
    items = [
        {"id": f"v{n}", "model": "ray-flash-2", "prompt": f"shot number {n}", "resolution": "540p"}
        for n in range(6)
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    out = tmp_path / "out"
    # ray-flash-2 540p 5s 16:9 costs about $0.34: $1 buys two.
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args, "--budget", "1") == 1
    created = cli_env.inspect.creates_total
    assert 1 <= created < len(items)
    output = capsys.readouterr().out
    assert "budget reached" in output
    with Journal(out / "journal.sqlite") as journal:
        assert journal.counts().get("pending", 0) == len(items) - created
    assert run(*args, "--budget", "100") == 0
    assert cli_env.inspect.creates_total == len(items)
    assert cli_env.inspect.duplicate_creates == 0


def test_no_key_and_no_emulator_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without LUMAAI_API_KEY and without --emulator, the error says how to get going."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    manifest = write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS[:1])
    assert run("run", manifest, "--out", tmp_path / "out") == 2
    assert API_KEY_HELP in capsys.readouterr().err
    assert run("credits") == 2


def test_emulator_flag_runs_the_quick_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--emulator runs an example manifest in-process without any key."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    out = tmp_path / "out"
    code = run(
        "run", EXAMPLES / "chained.yaml", "--out", out, "--emulator", "--emulator-speed", "3000"
    )
    assert code == 0, capsys.readouterr()
    assert {r["state"] for r in read_results(out).values()} == {"completed"}
    assert (out / "bear-1080p.mp4").stat().st_size > 0


def test_usage_errors_exit_2(
    cli_env: ThreadedEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options, limits files and --out paths are usage errors: exit 2, nothing sent."""
    manifest = write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS[:1])
    bad_limits = tmp_path / "limits.toml"
    bad_limits.write_text("[video]\nconcurency = 3\n")
    assert run("run", manifest, "--out", tmp_path / "o", "--limits", bad_limits) == 2
    assert "concurency" in capsys.readouterr().err
    assert run("run", manifest) == 2
    assert run("run", manifest, "--out", tmp_path / "o", "--budget", "-1") == 2
    assert run("frobnicate") == 2
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert run("run", manifest, "--out", a_file) == 2
    assert f"--out {a_file}: not a directory" in capsys.readouterr().err
    assert run("run", manifest, "--out", a_file / "sub") == 2
    assert f"--out {a_file / 'sub'}: cannot create the directory" in capsys.readouterr().err
    assert run("run", manifest, "--out", tmp_path / "o", "--batch", "b1") == 2
    assert "--batch NAME names a batch shared through Redis" in capsys.readouterr().err
    assert run("run", manifest, "--out", tmp_path / "o", "--batch", " ", "--redis", "x") == 2
    assert sum(cli_env.inspect.requests_by_route.values()) == 0


def test_status_reports_the_journal(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """status DIR: counts per state and the failures with their reasons."""
    items = [
        {"id": "ok", "model": "photon-flash-1", "prompt": "a quiet pond"},
        {"id": "bad", "model": "photon-flash-1", "prompt": "blacklisted pond"},
    ]
    out = tmp_path / "out"
    run("run", write_jsonl(tmp_path / "m.jsonl", items), "--out", out, "--limits", limits_file)
    capsys.readouterr()
    assert run("status", out) == 1
    text = capsys.readouterr().out
    assert "2 items" in text and "completed" in text
    assert "bad: " in text and "blacklisted" in text
    assert run("status", tmp_path / "nowhere") == 2


def test_api_commands(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """get, list, download, delete, concepts, camera-motions and credits talk to the API."""
    out = tmp_path / "out"
    manifest = write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS[:1])
    assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 0
    generation_id = read_results(out)["cat"]["generation_id"]
    capsys.readouterr()

    assert run("get", generation_id) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "completed"
    assert run("list", "--limit", "5") == 0
    assert generation_id in capsys.readouterr().out
    target = tmp_path / "dl"
    target.mkdir()
    assert run("download", generation_id, "--out", target) == 0
    assert (target / f"{generation_id}.jpg").stat().st_size > 0
    capsys.readouterr()
    assert run("concepts") == 0
    assert capsys.readouterr().out.strip()
    assert run("camera-motions") == 0
    assert capsys.readouterr().out.strip()
    assert run("credits") == 0
    assert "credit balance" in capsys.readouterr().out
    assert run("delete", generation_id) == 0
    assert run("get", generation_id) == 1
    assert "404" in capsys.readouterr().err


def test_help_is_useful_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """Each command's --help describes it and explains every argument."""
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    undocumented = []
    for name, sub in commands.choices.items():
        if name in ("emulator", "limits", "claims"):
            continue  # their own parsers; see the next test
        assert run(name, "--help") == 0
        assert sub.description, f"{name} has no description"
        assert sub.description.split(".")[0] in " ".join(capsys.readouterr().out.split())
        undocumented += [f"{name} {a.dest}" for a in sub._actions if not a.help]
    assert undocumented == []
    assert run("--help") == 0
    text = capsys.readouterr().out
    assert "emulator" in text and "limits" in text


def test_delegated_commands_have_their_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`lumasched emulator`, `limits` and `claims` explain every option in their own --help."""
    from lumasched.cli._claims import build_parser as claims_parser
    from lumasched.cli._emulator import build_parser as emulator_parser
    from lumasched.cli._limits import build_parser as limits_parser

    assert run("emulator", "--help") == 0
    assert "--speed X" in capsys.readouterr().out
    assert run("limits", "--help") == 0
    assert "--redis" in capsys.readouterr().out
    assert run("claims", "import", "--help") == 0
    assert "--batch NAME" in capsys.readouterr().out
    for parser in (emulator_parser(), limits_parser(), claims_parser()):
        assert [a.dest for a in parser._actions if not a.help] == []
        for sub in parser._actions:
            if isinstance(sub, argparse._SubParsersAction):
                for name, action in sub.choices.items():
                    assert [a.dest for a in action._actions if not a.help] == [], name


@pytest.mark.parametrize("name", ["images.jsonl", "videos.csv", "chained.yaml", "chained.jsonl"])
def test_example_manifests_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped example passes the check (dry run, no key needed)."""
    assert run("run", EXAMPLES / name, "--out", "unused", "--dry-run") == 0
    assert "nothing was sent" in capsys.readouterr().out


async def test_library_example_runs() -> None:
    """examples/library_usage.py runs a chained manifest on the emulator."""
    spec = importlib.util.spec_from_file_location("library_usage", EXAMPLES / "library_usage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert await module.main() == 0


@pytest.mark.redis
def test_run_shares_limits_through_redis(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    redis_process: RedisServer,
) -> None:
    """--redis URL runs the batch with the Redis limiter: all done, no 429."""
    manifest = write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args, "--redis", redis_process.url) == 0
    assert {r["state"] for r in read_results(out).values()} == {"completed"}
    assert cli_env.inspect.creates_total == len(MIXED_ITEMS)
    assert cli_env.inspect.rate_limited_total == 0


def test_a_journal_belongs_to_one_manifest(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another manifest pointed at the same --out is refused before anything is sent."""
    out = tmp_path / "out"
    first = write_jsonl(tmp_path / "first.jsonl", MIXED_ITEMS[:1])
    assert run("run", first, "--out", out, "--limits", limits_file, "--no-progress") == 0
    second = write_jsonl(tmp_path / "second.jsonl", MIXED_ITEMS[1:2])
    assert run("run", second, "--out", out, "--limits", limits_file, "-v") == 2
    err = capsys.readouterr().err
    assert "belongs to batch 'first.jsonl'" in err
    assert API_KEY not in err
    assert cli_env.inspect.creates_total == 1


async def test_live_display_renders_families_and_summary(
    cli_env: ThreadedEmulator, tmp_path: Path
) -> None:
    """The terminal display shows a row per family with done counts, then the summary."""
    from rich.console import Console

    from lumasched._config import Settings
    from lumasched.cli import _progress, _runner
    from lumasched.limits import Family
    from lumasched.manifest import Manifest

    manifest = Manifest(write_jsonl(tmp_path / "m.jsonl", MIXED_ITEMS[:3]))
    manifest.check()
    console = Console(record=True, force_terminal=True, width=100)
    totals = {Family.IMAGE: 2, Family.VIDEO: 1}
    display = _progress.LiveDisplay(limits=fx.FAST_LIMITS, totals=totals, console=console)
    options = _runner.RunOptions(
        manifest=manifest,
        out_dir=tmp_path / "out",
        journal_path=tmp_path / "out" / "journal.sqlite",
        results_path=tmp_path / "out" / "results.jsonl",
        limits=fx.FAST_LIMITS,
        settings=Settings.from_env(),
        total=3,
    )
    outcome = await _runner.run_batch(options, display)
    display.summary(outcome)
    text = console.export_text()
    assert "family  queued  creating  dreaming  downloading  done  failed" in text
    assert "lumasched run summary" in text
    assert outcome.completed == 3 and not outcome.failed
    last_video_row = [line for line in text.splitlines() if line.startswith("video ")][-1]
    assert last_video_row.split()[5] == "1"
