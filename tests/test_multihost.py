"""One manifest worked by several ``lumasched run --redis`` processes ("hosts").

Every test checks the same end state: the emulator saw exactly one create per
item and no body twice; Redis records every item completed with the host, path
and sha256 of its file; each file holds exactly the bytes the emulator serves
for that item's generation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from lumasched.claims import Claim, ClaimStatus, ClaimStore, batch_id
from lumasched.cli import main
from lumasched.manifest import Manifest
from tests._cli_fixtures import (
    API_KEY,
    LIMITS_TOML,
    ThreadedEmulator,
    emulator_config,
    write_jsonl,
)
from tests._netns import NetnsHosts, skip_reason
from tests._redis_fixtures import REPO, RedisServer, free_port, redis_process
from tests._waiting import wait_until_sync

__all__ = ["redis_process"]

pytestmark = pytest.mark.redis

CLAIM_TTL = "1.5"

ITEMS: list[dict[str, Any]] = [
    *({"id": f"img-{n:02d}", "model": "photon-flash-1", "prompt": f"still {n}"} for n in range(16)),
    *({"id": f"vid-{n:02d}", "model": "ray-flash-2", "prompt": f"clip {n}"} for n in range(8)),
    *(
        {
            "id": f"vid-{n:02d}-next",
            "model": "ray-flash-2",
            "prompt": f"clip {n}, continued",
            "keyframes": {"frame0": {"type": "generation", "ref": f"vid-{n:02d}"}},
        }
        for n in range(0, 8, 2)
    ),
]
"""28 items, unique prompts (a duplicate create would show as a duplicate body);
four build on an item another host may have made."""


@pytest.fixture
def emulator() -> Iterator[ThreadedEmulator]:
    threaded = ThreadedEmulator(emulator_config(speed=4000.0))
    try:
        yield threaded
    finally:
        threaded.close()


@pytest.fixture
def slow_emulator() -> Iterator[ThreadedEmulator]:
    # Every generation takes 0.4 s: a worker killed early holds claims in
    # every stage (created, polled, downloaded).
    threaded = ThreadedEmulator(emulator_config(fixed_latency=0.4))
    try:
        yield threaded
    finally:
        threaded.close()


def _manifest(tmp_path: Path) -> Path:
    (tmp_path / "limits.toml").write_text(LIMITS_TOML)
    return write_jsonl(tmp_path / "batch.jsonl", ITEMS)


def _spawn(
    manifest: Path,
    out: Path,
    redis_url: str,
    base_url: str,
    *,
    prefix: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> subprocess.Popen[str]:
    env = dict(os.environ, LUMAAI_API_KEY=API_KEY, LUMAAI_BASE_URL=base_url, PYTHONPATH=str(REPO))
    env.pop("LUMASCHED_REDIS_URL", None)
    return subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "lumasched",
            "run",
            str(manifest),
            "--out",
            str(out),
            "--redis",
            redis_url,
            "--limits",
            str(manifest.parent / "limits.toml"),
            "--claim-ttl",
            CLAIM_TTL,
            "--reconcile-settle",
            "0.5",
            "--no-progress",
            *extra,
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(workers: Sequence[subprocess.Popen[str]], timeout: float = 40.0) -> list[str]:
    outputs = []
    for worker in workers:
        try:
            out, _ = worker.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
            pytest.fail(f"a worker did not finish in {timeout}s:\n{out}")
        outputs.append(out)
    return outputs


async def _claims_view(redis_url: str, manifest: Path) -> dict[str, Claim]:
    """The batch's record in Redis, by item id."""
    batch = batch_id(Manifest(manifest))
    store = ClaimStore(redis_url, api_key=API_KEY, manifest=batch, owner="test")
    async with store:
        return {claim.record.item: claim for claim in (await store.snapshot()).values()}


def _results(out: Path) -> dict[str, dict[str, Any]]:
    path = out / "results.jsonl"
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {line["id"]: line for line in lines}


def _asset_sha256(emu: ThreadedEmulator, generation_id: str) -> str:
    generation = emu.emu.generation_json(generation_id)
    assert generation is not None and generation["state"] == "completed"
    assets = generation["assets"]
    url = assets.get("video") or assets["image"]
    with urllib.request.urlopen(url, timeout=10) as response:
        return hashlib.sha256(response.read()).hexdigest()


def _check_exactly_once(emu: ThreadedEmulator, redis_url: str, manifest: Path) -> dict[str, Claim]:
    """Every item created once, completed, its file verified; returns the Redis view."""
    inspect = emu.inspect
    assert inspect.creates_total == len(ITEMS), inspect.to_json()
    assert inspect.duplicate_creates == 0, inspect.duplicate_bodies
    view = asyncio.run(_claims_view(redis_url, manifest))
    assert sorted(view) == sorted(item["id"] for item in ITEMS)
    generations = set()
    for item in ITEMS:
        claim = view[item["id"]]
        record = claim.record
        assert claim.status is ClaimStatus.DONE and record.state == "completed", record
        assert record.generation_id is not None and record.path is not None
        generations.add(record.generation_id)
        echo = emu.emu.generation_json(record.generation_id)
        assert echo is not None and echo["request"]["prompt"] == item["prompt"]
        data = Path(record.path).read_bytes()
        assert (
            hashlib.sha256(data).hexdigest()
            == record.sha256
            == _asset_sha256(emu, record.generation_id)
        )
    assert len(generations) == len(ITEMS)
    return view


def test_three_workers_share_one_manifest(
    slow_emulator: ThreadedEmulator,
    redis_process: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three runs of one manifest: each item created once, by one of them, and reported once."""
    emulator = slow_emulator
    manifest = _manifest(tmp_path)
    outs = [tmp_path / f"host-{i}" for i in range(3)]
    workers = [_spawn(manifest, out, redis_process.url, emulator.base_url) for out in outs]
    outputs = _finish(workers)
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(outputs)
    view = _check_exactly_once(emulator, redis_process.url, manifest)
    reported: dict[str, str] = {}
    for out in outs:
        for key, line in _results(out).items():
            assert key not in reported, f"{key} reported by {reported[key]} and {out}"
            reported[key] = str(out)
            assert line["state"] == "completed"
            assert line["sha256"] == view[key].record.sha256
            assert Path(line["path"]).parent == out
    assert sorted(reported) == sorted(item["id"] for item in ITEMS)
    # Any host's status shows the record all hosts share.
    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    assert main(["status", str(outs[0]), "--redis", redis_process.url]) == 0
    shown = capsys.readouterr().out
    batch = batch_id(Manifest(manifest))
    assert f"Redis (all hosts), batch {batch}: {len(ITEMS)} items: {len(ITEMS)} completed" in shown
    assert API_KEY not in shown


def test_a_rerun_reports_what_it_finished_before(
    emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """Running the same command again creates nothing and lists every item it
    finished earlier in results.jsonl, as a run without Redis does."""
    manifest = _manifest(tmp_path)
    for _ in range(2):
        worker = _spawn(manifest, tmp_path / "out", redis_process.url, emulator.base_url)
        (output,) = _finish([worker])
        assert worker.returncode == 0, output
        assert sorted(_results(tmp_path / "out")) == sorted(item["id"] for item in ITEMS)
    _check_exactly_once(emulator, redis_process.url, manifest)


def test_a_killed_worker_s_items_are_taken_over(
    slow_emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """SIGKILL one of two workers mid-run: the other takes over its items once
    their claims expire, polling the generations it had created (never creating
    them again)."""
    emu = slow_emulator
    manifest = _manifest(tmp_path)
    victim = _spawn(manifest, tmp_path / "victim", redis_process.url, emu.base_url)
    survivor = _spawn(manifest, tmp_path / "survivor", redis_process.url, emu.base_url)
    try:
        held: dict[str, Claim] = {}

        def victim_has_generations_in_flight() -> bool:
            view = asyncio.run(_claims_view(redis_process.url, manifest))
            held.clear()
            held.update(
                (key, claim)
                for key, claim in view.items()
                if f":{victim.pid}:" in (claim.record.owner or "")
                and claim.status is not ClaimStatus.DONE
            )
            return sum(c.record.state == "submitted" for c in held.values()) >= 2

        wait_until_sync(victim_has_generations_in_flight, "the victim's generations", timeout=15.0)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        (output,) = _finish([survivor])
    finally:
        for worker in (victim, survivor):
            if worker.poll() is None:
                worker.kill()
            if worker.stdout is not None and not worker.stdout.closed:
                worker.communicate()
    assert survivor.returncode == 0, output
    view = _check_exactly_once(emu, redis_process.url, manifest)
    by_survivor = _results(tmp_path / "survivor")
    created_by_victim = {
        k: c.record.generation_id for k, c in held.items() if c.record.generation_id
    }
    assert created_by_victim
    for key, generation_id in created_by_victim.items():
        # Finished by the survivor, from the generation the victim created.
        assert key in by_survivor, f"{key} was the victim's and is not the survivor's"
        assert view[key].record.generation_id == generation_id
    assert set(_results(tmp_path / "victim")) | set(by_survivor) | _finished_before_kill(
        view, tmp_path / "victim"
    ) == {item["id"] for item in ITEMS}


def _finished_before_kill(view: dict[str, Claim], out: Path) -> set[str]:
    """Items the victim completed whose results line the kill may have cut off."""
    return {k for k, c in view.items() if c.record.path and Path(c.record.path).parent == out}


@pytest.fixture
def netns_hosts() -> Iterator[NetnsHosts]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"no network namespaces ({reason}); the process tests cover the rest")
    hosts = NetnsHosts(2)
    try:
        hosts.create()
        yield hosts
    finally:
        hosts.destroy()


def test_two_hosts_in_separate_network_namespaces(netns_hosts: NetnsHosts, tmp_path: Path) -> None:
    """The two workers run in their own network namespaces and reach Redis and the
    emulator over veth links only: every item still done exactly once."""
    address = netns_hosts.server_address
    port = free_port()
    redis = subprocess.Popen(
        # Bound to the veth address only; protected mode would refuse the namespaces.
        ["redis-server", "--port", str(port), "--bind", address, "--protected-mode", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    emu = ThreadedEmulator(emulator_config(speed=4000.0, host=address))
    try:
        url = f"redis://{address}:{port}/0"
        wait_until_sync(lambda: _redis_up(address, port), "redis-server")
        manifest = _manifest(tmp_path)
        outs = [tmp_path / f"ns-{i}" for i in range(2)]
        workers = [
            _spawn(manifest, out, url, emu.base_url, prefix=netns_hosts.exec_prefix(i))
            for i, out in enumerate(outs)
        ]
        outputs = _finish(workers)
        assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
        _check_exactly_once(emu, url, manifest)
        reported = [key for out in outs for key in _results(out)]
        assert sorted(reported) == sorted(item["id"] for item in ITEMS)
    finally:
        emu.close()
        redis.kill()
        redis.wait()


def _redis_up(address: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((address, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
