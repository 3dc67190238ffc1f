"""``lumasched run`` at the edges: a wrong key, a dead API, edited and failed items,
removed items, and what ``--dry-run`` says in its exit status. In-process, against
the emulator on its own thread (over a real socket)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from lumasched import cli
from lumasched.store.journal import Journal
from tests import _cli_fixtures as fx
from tests import _redis_fixtures as redis_fx
from tests._cli_fixtures import (
    API_KEY,
    ThreadedEmulator,
    emulator_config,
    read_results,
    write_jsonl,
)
from tests._redis_fixtures import RedisServer

emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file
redis_process = redis_fx.redis_process

ITEMS: list[dict[str, Any]] = [
    {"id": "cat", "model": "photon-flash-1", "prompt": "a cat asleep on a windowsill"},
    {"id": "sea", "model": "ray-flash-2", "prompt": "waves on a black sand beach"},
    {"id": "owl", "model": "photon-flash-1", "prompt": "a snowy owl on a branch"},
    {"id": "owl-2", "model": "photon-flash-1", "prompt": "a barn owl in flight"},
]
CHAINED: list[dict[str, Any]] = [
    *ITEMS,
    {"id": "bear", "model": "ray-flash-2", "prompt": "a teddy bear walks into a clearing"},
    {
        "id": "bear-2",
        "model": "ray-flash-2",
        "prompt": "the teddy bear sits down",
        "keyframes": {"frame0": {"type": "generation", "ref": "bear"}},
    },
    {"type": "upscale", "id": "bear-hd", "source": "bear-2", "resolution": "1080p"},
]
"""With a chain: items waiting on others when creating stops are parked too."""
REJECTED = "the API rejected the key (HTTP 401) — check LUMAAI_API_KEY"


def run(*args: str | Path) -> int:
    return cli.main([str(a) for a in args])


def states(out: Path) -> dict[str, tuple[str, str | None]]:
    with Journal(out / "journal.sqlite", read_only=True) as journal:
        return {r.key: (r.state, r.error_type) for r in journal.records()}


def dead_url() -> str:
    """A base URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/dream-machine/v1"


def test_wrong_key_leaves_items_pending_then_right_key_does_them_all(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 401 stops creating at once, says so once, exits 2, fails nothing; a rerun with
    the right key creates every item."""
    manifest = write_jsonl(tmp_path / "m.jsonl", CHAINED)
    out = tmp_path / "out"
    monkeypatch.setenv("LUMAAI_API_KEY", "lm-wrong-key")
    assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.count(REJECTED) == 1
    assert "7 items stay pending" in err
    assert "lm-wrong-key" not in err
    assert {state for state, _ in states(out).values()} == {"pending"}
    assert not (out / "results.jsonl").read_text()
    assert cli_env.inspect.creates_total == 0
    assert run("status", out) == 0
    assert "7 not finished (pending: 7 key rejected)" in capsys.readouterr().out

    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 0
    assert {r["state"] for r in read_results(out).values()} == {"completed"}
    assert len(read_results(out)) == len(CHAINED)
    assert cli_env.inspect.creates_total == len(CHAINED)


def test_unreachable_api_is_reported_then_rerun_finishes(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead port: the run names the URL and the error, gives up after the bounded
    time with exit 69 and every item pending; pointed at the emulator, a rerun
    finishes everything."""
    manifest = write_jsonl(tmp_path / "m.jsonl", CHAINED)
    out = tmp_path / "out"
    url = dead_url()
    monkeypatch.setenv("LUMAAI_BASE_URL", url)
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args, "--unreachable-timeout", "1") == cli.EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    assert f"cannot reach the API at {url}" in captured.out
    assert "could not connect" in captured.out
    assert f"cannot reach the API at {url} (gave up after" in captured.err
    assert "7 items stay pending" in captured.err
    assert {state for state, _ in states(out).values()} == {"pending"}

    monkeypatch.setenv("LUMAAI_BASE_URL", cli_env.base_url)
    assert run(*args) == 0
    assert {r["state"] for r in read_results(out).values()} == {"completed"}
    assert cli_env.inspect.creates_total == len(CHAINED)


def test_api_back_within_the_bounded_time_finishes_the_run(
    limits_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the API cannot be reached the run waits and retries; when it comes back
    (here: the emulator starts on the dead port) the same run completes."""
    import threading

    url = dead_url()
    port = int(url.split(":")[2].split("/")[0])
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS[:2])
    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    monkeypatch.setenv("LUMAAI_BASE_URL", url)
    monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
    started: list[ThreadedEmulator] = []
    timer = threading.Timer(
        1.5, lambda: started.append(ThreadedEmulator(emulator_config(port=port)))
    )
    timer.start()
    try:
        args = ("run", manifest, "--out", tmp_path / "out", "--limits", limits_file)
        assert run(*args, "--no-progress", "--unreachable-timeout", "60") == 0
    finally:
        timer.join()
        for emu in started:
            emu.close()
    assert started and started[0].inspect.creates_total == 2


def test_edited_prompt_is_refused_then_redone(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An item edited after its generation was created is never reported done with the
    old file: the rerun refuses (exit 2, FILE:LINE naming it, nothing sent);
    --redo-changed creates it anew and replaces its file."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args) == 0
    before = read_results(out)
    old_sha = hashlib.sha256((out / "owl.jpg").read_bytes()).hexdigest()
    edited = [dict(item) for item in ITEMS]
    edited[2]["prompt"] = "a snowy owl on a branch at dusk"
    edited.append({"id": "fox", "model": "photon-flash-1", "prompt": "a fox in the snow"})
    write_jsonl(manifest, edited)
    capsys.readouterr()

    assert run(*args) == 2
    err = capsys.readouterr().err
    gid = before["owl"]["generation_id"]
    assert f"{manifest}:3: owl: request changed since generation {gid} was created" in err
    assert "--redo-changed" in err
    assert cli_env.inspect.creates_total == len(ITEMS)  # nothing sent, not even the new fox

    assert run("run", manifest, "--out", out, "--dry-run", "--limits", limits_file) == 2
    assert run("run", manifest, "--out", out, "--dry-run", "--redo-changed") == 0
    plan = capsys.readouterr().out
    assert "this run would create 2 item(s)" in plan

    assert run(*args, "--redo-changed") == 0
    after = read_results(out)
    assert after["owl"]["generation_id"] != gid
    assert after["owl"]["sha256"] != old_sha
    assert hashlib.sha256((out / "owl.jpg").read_bytes()).hexdigest() == after["owl"]["sha256"]
    assert after["cat"] == before["cat"]
    assert cli_env.inspect.creates_total == len(ITEMS) + 2

    assert run(*args) == 0  # the manifest and the journal agree again
    assert cli_env.inspect.creates_total == len(ITEMS) + 2


def test_edit_of_a_dependency_redoes_its_dependents(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An item built on an edited item is listed too, and redone with it."""
    items: list[dict[str, Any]] = [
        {"id": "bear", "model": "ray-flash-2", "prompt": "a teddy bear walks into a clearing"},
        {"type": "upscale", "id": "bear-hd", "source": "bear", "resolution": "1080p"},
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args) == 0
    items[0]["prompt"] = "a teddy bear runs into a clearing"
    write_jsonl(manifest, items)
    capsys.readouterr()
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert f"{manifest}:1: bear: request changed" in err
    assert f"{manifest}:2: bear-hd: builds on 'bear'" in err
    assert run(*args, "--redo-changed") == 0
    assert cli_env.inspect.creates_total == 4


def test_removed_item_stays_in_results_marked(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path
) -> None:
    """An item taken out of the manifest keeps its results line (its file is still
    there), marked "in_manifest": false; put back, the mark goes."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args) == 0
    write_jsonl(manifest, ITEMS[:3])
    assert run(*args) == 0
    results = read_results(out)
    assert results["owl-2"]["in_manifest"] is False
    assert results["owl-2"]["state"] == "completed"
    assert "in_manifest" not in results["cat"]
    write_jsonl(manifest, ITEMS)
    assert run(*args) == 0
    assert "in_manifest" not in read_results(out)["owl-2"]
    assert cli_env.inspect.creates_total == len(ITEMS)


def test_failed_generation_is_retried_only_when_asked(
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed generation stays failed on a rerun (nothing sent); --dry-run
    --retry-failed shows the count and cost; --retry-failed creates it (and the item
    that failed because of it) anew."""
    items: list[dict[str, Any]] = [
        {"id": "ok", "model": "photon-flash-1", "prompt": "a quiet pond"},
        {"id": "storm", "model": "ray-flash-2", "prompt": "a storm over the sea"},
        {"type": "upscale", "id": "storm-hd", "source": "storm", "resolution": "1080p"},
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
    # First the service refuses the word (a GPU-side failure, as far as we can tell).
    strict = ThreadedEmulator(emulator_config(blacklist=("storm",)))
    try:
        monkeypatch.setenv("LUMAAI_BASE_URL", strict.base_url)
        assert run(*args) == 1
        assert run(*args) == 1  # stays failed: nothing sent
        assert strict.inspect.creates_total == 2
    finally:
        strict.close()
    assert states(out)["storm"] == ("failed", "GenerationFailed")
    assert states(out)["storm-hd"] == ("failed", "DependencyFailed")
    lenient = ThreadedEmulator(emulator_config())
    try:
        monkeypatch.setenv("LUMAAI_BASE_URL", lenient.base_url)
        capsys.readouterr()
        assert run("run", manifest, "--out", out, "--dry-run") == 0
        plan = capsys.readouterr().out
        assert "1 item(s) whose generation failed stay failed; --retry-failed" in plan
        assert run("run", manifest, "--out", out, "--dry-run", "--retry-failed") == 0
        plan = capsys.readouterr().out
        assert "including 1 whose generation failed (--retry-failed)" in plan
        assert "this run would create 2 item(s)" in plan
        assert lenient.inspect.creates_total == 0
        assert run(*args, "--retry-failed") == 0
        assert lenient.inspect.creates_total == 2
    finally:
        lenient.close()
    results = read_results(out)
    assert {r["state"] for r in results.values()} == {"completed"}


def test_dry_run_exit_status_tells_the_truth(
    cli_env: ThreadedEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--dry-run: 0 when the run would go; 2 for a rejected key, 69 for an
    unreachable API, 1 over --budget; never a create."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS)
    out = tmp_path / "out"
    assert run("run", manifest, "--out", out, "--dry-run") == 0
    assert run("run", manifest, "--out", out, "--dry-run", "--budget", "0.0001") == 1
    assert "OVER budget" in capsys.readouterr().out
    monkeypatch.setenv("LUMAAI_API_KEY", "lm-wrong-key")
    assert run("run", manifest, "--out", out, "--dry-run") == 2
    assert REJECTED in capsys.readouterr().err
    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    url = dead_url()
    monkeypatch.setenv("LUMAAI_BASE_URL", url)
    assert run("run", manifest, "--out", out, "--dry-run") == cli.EXIT_UNAVAILABLE
    assert f"cannot reach the API at {url}" in capsys.readouterr().err
    assert cli_env.inspect.creates_total == 0
    assert not out.exists()


def test_journal_of_0_1_0_with_auth_failures_is_picked_up(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path
) -> None:
    """Items a 0.1.0 journal recorded as failed for a 401 (nothing was created) are
    pending again: the rerun creates them."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS[:2])
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args) == 0
    with Journal(out / "journal.sqlite") as journal:
        for key in ("cat", "sea"):
            # as 0.1.0 left it: intent cleared, "failed" for the key
            record = journal.get(key)
            assert record is not None
            journal.restart(
                key, request=record.request, kind=record.kind, family=record.family, reason=""
            )
            journal.update(key, state="failed", error_type="AuthenticationError", reason="401")
    (out / "results.jsonl").write_text(
        "".join(json.dumps({"id": k, "state": "failed"}) + "\n" for k in ("cat", "sea"))
    )
    assert run(*args) == 0
    assert {r["state"] for r in read_results(out).values()} == {"completed"}
    assert cli_env.inspect.creates_total == 4


def test_status_reads_while_a_run_holds_the_journal(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` takes no lock: it reads the journal a run holds and names that run;
    a run started meanwhile is refused with exit 2, naming it too."""
    import os

    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS[:1])
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    assert run(*args) == 0
    capsys.readouterr()
    with Journal(out / "journal.sqlite"):  # as a running run holds it
        assert run("status", out) == 0
        shown = capsys.readouterr().out
        assert "completed    1" in shown
        assert f"in use by a run now: pid {os.getpid()} on " in shown
        assert run(*args) == 2
        assert "in use by another lumasched run" in capsys.readouterr().err
        assert run("run", manifest, "--out", out, "--dry-run") == 2
        assert "the run would be refused" in capsys.readouterr().out
    assert run("status", out) == 0
    assert "in use" not in capsys.readouterr().out
    assert cli_env.inspect.creates_total == 1


def test_wrong_base_url_path_fails_no_item(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A base URL that reaches a server but not the API (404 to every create) is not
    the items' fault: exit 2 naming the status, items pending; fixed, a rerun does them."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    monkeypatch.setenv("LUMAAI_BASE_URL", cli_env.base_url.replace("/dream-machine/v1", "/v2"))
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert "the API answered HTTP 404" in err and "check --base-url / LUMAAI_BASE_URL" in err
    assert {state for state, _ in states(out).values()} == {"pending"}
    monkeypatch.setenv("LUMAAI_BASE_URL", cli_env.base_url)
    assert run(*args) == 0
    assert cli_env.inspect.creates_total == len(ITEMS)


def test_a_folder_is_owned_even_with_the_journal_elsewhere(
    cli_env: ThreadedEmulator, limits_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --journal outside --out, a second run on the same folder (another journal)
    is refused too: the folder has an owner of its own."""
    from lumasched.store._ownership import OwnerLock

    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS[:1])
    out = tmp_path / "out"
    out.mkdir()
    held = OwnerLock(out / ".lumasched", what="output folder")  # as a running run holds it
    try:
        journal = tmp_path / "elsewhere" / "j.sqlite"
        assert run("run", manifest, "--out", out, "--journal", journal, "--no-progress") == 2
        assert "this output folder is in use by another lumasched run" in capsys.readouterr().err
    finally:
        held.release()
    assert run("run", manifest, "--out", out, "--journal", journal, "--limits", limits_file) == 0
    assert cli_env.inspect.creates_total == 1


def test_an_account_out_of_credits_fails_no_item(
    limits_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """402 to a create (no credits left) is the account's problem, not the item's:
    exit 2 saying so, every item pending."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS)
    out = tmp_path / "out"
    broke = ThreadedEmulator(emulator_config(credit_balance_cents=0.0))
    try:
        monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
        monkeypatch.setenv("LUMAAI_BASE_URL", broke.base_url)
        monkeypatch.delenv("LUMASCHED_REDIS_URL", raising=False)
        assert run("run", manifest, "--out", out, "--limits", limits_file, "--no-progress") == 2
    finally:
        broke.close()
    err = capsys.readouterr().err
    assert "HTTP 402" in err and "add credits" in err
    assert {state for state, _ in states(out).values()} == {"pending"}


def test_with_redis_a_dead_api_leaves_claims_for_the_next_run(
    cli_env: ThreadedEmulator,
    limits_file: Path,
    tmp_path: Path,
    redis_process: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --redis, items parked for an unreachable API release their claims rather
    than record a failure every host would see: the next run does them all."""
    manifest = write_jsonl(tmp_path / "m.jsonl", ITEMS)
    out = tmp_path / "out"
    args = ("run", manifest, "--out", out, "--limits", limits_file, "--no-progress")
    redis = ("--redis", redis_process.url)
    monkeypatch.setenv("LUMAAI_BASE_URL", dead_url())
    assert run(*args, *redis, "--unreachable-timeout", "1") == cli.EXIT_UNAVAILABLE
    monkeypatch.setenv("LUMAAI_BASE_URL", cli_env.base_url)
    assert run(*args, *redis) == 0
    assert {r["state"] for r in read_results(out).values()} == {"completed"}
    assert cli_env.inspect.creates_total == len(ITEMS)
