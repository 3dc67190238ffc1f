"""``lumasched run --redis`` when batches share names and when Redis restarts empty.

Real processes, a real ``redis-server`` (killed and started again with no keys)
and the emulator: every item is created once, whatever the file names, and a
lost Redis state costs a pause, or (when a host that is gone may have made some
items) an exit that says which wait and how to resolve it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from lumasched.claims import Claim, ClaimStatus, ClaimStore, batch_id, item_digest
from lumasched.cli import EXIT_CLAIMS_WAIT, main
from lumasched.manifest import Manifest
from tests._cli_fixtures import API_KEY, LIMITS_TOML, ThreadedEmulator, emulator_config, write_jsonl
from tests._redis_fixtures import RedisServer, redis_process
from tests._waiting import wait_until_sync
from tests.test_multihost import _claims_view, _finish, _results, _spawn

__all__ = ["redis_process"]

pytestmark = pytest.mark.redis


@pytest.fixture
def emulator() -> Iterator[ThreadedEmulator]:
    threaded = ThreadedEmulator(emulator_config(speed=4000.0))
    try:
        yield threaded
    finally:
        threaded.close()


@pytest.fixture
def slow_emulator() -> Iterator[ThreadedEmulator]:
    # Every generation takes 0.5 s: a run lasts long enough to lose Redis mid-way.
    threaded = ThreadedEmulator(emulator_config(fixed_latency=0.5))
    try:
        yield threaded
    finally:
        threaded.close()


def _shots(folder: Path, subject: str, n: int = 3) -> Path:
    """``folder/batch.jsonl`` with ids shot-0... (the same names in every folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "limits.toml").write_text(LIMITS_TOML)
    items = [
        {"id": f"shot-{i}", "model": "photon-flash-1", "prompt": f"{subject}, shot {i}"}
        for i in range(n)
    ]
    return write_jsonl(folder / "batch.jsonl", items)


def _batch(folder: Path, tag: str, images: int, videos: int) -> tuple[Path, list[str]]:
    """A manifest of its own; shared ones have more items than a host claims ahead
    (twice the families' concurrency), so every host gets a share."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "limits.toml").write_text(LIMITS_TOML)
    items: list[dict[str, Any]] = [
        *({"id": f"img-{n:02d}", "model": "photon-flash-1", "prompt": f"{tag} still {n}"}
          for n in range(images)),
        *({"id": f"vid-{n:02d}", "model": "ray-flash-2", "prompt": f"{tag} clip {n}"}
          for n in range(videos)),
    ]  # fmt: skip
    return write_jsonl(folder / "batch.jsonl", items), [item["id"] for item in items]


def _made_once(emu: ThreadedEmulator, outs: dict[Path, list[str]]) -> None:
    """Every item of every out dir completed there, each created exactly once."""
    inspect = emu.inspect
    assert inspect.duplicate_creates == 0, inspect.duplicate_bodies
    assert inspect.creates_total == sum(len(ids) for ids in outs.values()), inspect.to_json()
    for out, ids in outs.items():
        results = _results(out)
        assert sorted(results) == sorted(ids), out
        assert all(line["state"] == "completed" for line in results.values())


def test_same_named_batches_one_after_the_other(
    emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """Two different manifests called batch.jsonl with the same ids, run one after
    the other with the same Redis: the second makes its own three items."""
    first = _shots(tmp_path / "cats", "a cat")
    second = _shots(tmp_path / "dogs", "a dog")
    outs = {}
    for manifest in (first, second):
        out = manifest.parent / "out"
        worker = _spawn(manifest, out, redis_process.url, emulator.base_url)
        (output,) = _finish([worker])
        assert worker.returncode == 0, output
        outs[out] = ["shot-0", "shot-1", "shot-2"]
    _made_once(emulator, outs)


def test_same_named_batches_at_the_same_time(
    emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """The same two manifests run at once: neither takes the other's items."""
    manifests = [_shots(tmp_path / "cats", "a cat"), _shots(tmp_path / "dogs", "a dog")]
    workers = [_spawn(m, m.parent / "out", redis_process.url, emulator.base_url) for m in manifests]
    outputs = _finish(workers)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    _made_once(emulator, {m.parent / "out": ["shot-0", "shot-1", "shot-2"] for m in manifests})


def test_the_same_manifest_from_two_paths_is_one_batch(
    emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """A copy of the manifest elsewhere (another name even) is the same batch: the
    second run makes nothing and counts the items as finished by the other host."""
    original = _shots(tmp_path / "here", "a fox", n=4)
    copy = tmp_path / "there" / "copy-of-batch.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    (copy.parent / "limits.toml").write_text(LIMITS_TOML)
    for manifest in (original, copy):
        worker = _spawn(manifest, manifest.parent / "out", redis_process.url, emulator.base_url)
        (output,) = _finish([worker])
        assert worker.returncode == 0, output
    assert emulator.inspect.creates_total == 4
    assert "4 item(s) were finished by other hosts" in output
    assert _results(copy.parent / "out") == {}


def test_a_named_batch_makes_an_edited_item_again(
    emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """With --batch NAME an edited manifest keeps the record of unchanged items, and
    an item whose request changed is made anew (never reported done)."""
    manifest = _shots(tmp_path / "shots", "a heron")
    out = tmp_path / "shots" / "out"
    worker = _spawn(manifest, out, redis_process.url, emulator.base_url, extra=["--batch", "b1"])
    _finish([worker])
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace("a heron", "a crane")
    manifest.write_text("\n".join(lines) + "\n")
    other = tmp_path / "other-host"
    worker = _spawn(manifest, other, redis_process.url, emulator.base_url, extra=["--batch", "b1"])
    (output,) = _finish([worker])
    assert worker.returncode == 0, output
    assert emulator.inspect.creates_total == 4 and emulator.inspect.duplicate_creates == 0
    assert sorted(_results(other)) == ["shot-1"]
    assert "batch n-" in output and "named 'b1'" in output


def _restart_empty(redis: RedisServer, down: float) -> None:
    redis.stop()
    time.sleep(down)
    redis.start()


def test_two_batches_ride_through_a_redis_restart(
    slow_emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """Two runs, each with its own manifest, share one key's limits; Redis is killed
    mid-run and comes back empty: both finish every item, no 429, nothing twice."""
    emu = slow_emulator
    runs = [_batch(tmp_path / name, name, images=20, videos=8) for name in ("red", "blue")]
    outs = {manifest.parent / "out": ids for manifest, ids in runs}
    workers = [
        _spawn(manifest, manifest.parent / "out", redis_process.url, emu.base_url)
        for manifest, _ in runs
    ]
    try:
        wait_until_sync(
            lambda: all(len(_results(out)) >= 3 for out in outs),
            "both runs under way",
            timeout=20.0,
        )
        _restart_empty(redis_process, 1.0)
        outputs = _finish(workers, timeout=60.0)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    assert all("Traceback" not in output for output in outputs), "\n".join(outputs)
    assert all("Redis lost the claim state" in output for output in outputs)
    _made_once(emu, outs)
    assert emu.inspect.rate_limited_total == 0, emu.inspect.to_json()


def test_one_manifest_on_two_hosts_rides_through_a_redis_restart(
    slow_emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """Two live hosts work one manifest; Redis comes back empty: both re-seed, wait
    for each other, and finish the batch together: every item once, no 429."""
    emu = slow_emulator
    manifest, ids = _batch(tmp_path / "shared", "shared", images=32, videos=8)
    outs = [tmp_path / "a", tmp_path / "b"]
    workers = [_spawn(manifest, out, redis_process.url, emu.base_url) for out in outs]
    try:
        wait_until_sync(
            lambda: all(_results(out) for out in outs), "both hosts working", timeout=20.0
        )
        _restart_empty(redis_process, 1.0)
        outputs = _finish(workers, timeout=60.0)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    assert all("Traceback" not in output for output in outputs)
    assert all("claims re-seeded" in output for output in outputs), "\n".join(outputs)
    inspect = emu.inspect
    assert inspect.creates_total == len(ids) and inspect.duplicate_creates == 0
    assert inspect.rate_limited_total == 0, inspect.to_json()
    reported = [key for out in outs for key in _results(out)]
    assert sorted(reported) == sorted(ids), "each item reported once, by one host"


def test_a_host_gone_during_the_outage_leaves_its_items_waiting(
    slow_emulator: ThreadedEmulator,
    redis_process: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two hosts work one manifest; Redis is killed, one host dies, Redis comes back
    empty. The survivor makes nothing twice, exits EXIT_CLAIMS_WAIT saying which
    items wait; importing the dead host's --out lets a rerun finish every item once."""
    emu = slow_emulator
    manifest, ids = _batch(tmp_path / "shared", "shared", images=32, videos=8)
    survivor_out, victim_out = tmp_path / "survivor", tmp_path / "victim"
    survivor = _spawn(manifest, survivor_out, redis_process.url, emu.base_url)
    victim = _spawn(manifest, victim_out, redis_process.url, emu.base_url)
    try:
        wait_until_sync(
            lambda: _results(survivor_out) and _results(victim_out),
            "both hosts working",
            timeout=20.0,
        )
        redis_process.stop()
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        time.sleep(0.5)
        redis_process.start()
        (output,) = _finish([survivor], timeout=60.0)
    finally:
        for worker in (survivor, victim):
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert survivor.returncode == EXIT_CLAIMS_WAIT, output
    assert "Traceback" not in output
    waiting = [line for line in output.splitlines() if "item(s) wait (" in line]
    assert len(waiting) == 1, output
    assert str(victim_out.resolve()) in waiting[0] and "lumasched claims import" in waiting[0]
    assert emu.inspect.duplicate_creates == 0, emu.inspect.duplicate_bodies

    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    capsys.readouterr()
    assert main(["status", str(survivor_out), "--redis", redis_process.url]) == 0
    shown = capsys.readouterr().out
    assert "Redis lost the claim state; not re-seeded yet: " in shown
    assert str(victim_out.resolve()) in shown
    argv = ["claims", "import", str(manifest), str(victim_out), "--redis", redis_process.url]
    assert main(argv) == 0
    assert "record(s) imported" in capsys.readouterr().out
    rerun = _spawn(manifest, survivor_out, redis_process.url, emu.base_url)
    (output,) = _finish([rerun], timeout=60.0)
    assert rerun.returncode == 0, output
    assert emu.inspect.duplicate_creates == 0, emu.inspect.duplicate_bodies
    assert emu.inspect.creates_total == len(ids), emu.inspect.to_json()
    # A killed host may have finished items whose results line it never wrote:
    # the shared record says where every file is.
    view = asyncio.run(_claims_view(redis_process.url, manifest))
    assert sorted(view) == sorted(ids)
    for key, claim in view.items():
        assert claim.record.state == "completed" and claim.record.path, key
        assert Path(claim.record.path).is_file(), key
    assert set(_results(survivor_out)) | set(_results(victim_out)) <= set(ids)


def _read_until(worker: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The worker's output up to its first line holding ``marker`` (what it printed
    proves it got there); the rest is left for ``_finish``."""
    assert worker.stdout is not None
    stdout = worker.stdout
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in stdout:
            lines.append(line)
            if marker in line:
                seen.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(timeout):
        worker.kill()
        reader.join()
        pytest.fail(f"the worker never printed {marker!r}:\n{''.join(lines)}")
    reader.join()
    return "".join(lines)


def _media(out: Path) -> int:
    return sum(1 for path in out.iterdir() if path.suffix in (".png", ".jpg", ".mp4"))


def test_a_redis_outage_pauses_creates_and_resumes(
    slow_emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """Redis unreachable for longer than the claim TTL (its data kept, as with
    append-only persistence): generations already created are still downloaded,
    creates pause, the run says so and for how long, and resumes by itself."""
    emu = slow_emulator
    redis_process.stop()
    redis_process.persistent = True
    redis_process.start()
    manifest, ids = _batch(tmp_path / "long", "long", images=16, videos=8)
    out = manifest.parent / "out"
    worker = _spawn(manifest, out, redis_process.url, emu.base_url)
    try:
        # Redis goes while a generation is surely in flight (created less than 0.3 s
        # ago, each takes 0.5 s): between two waves of creates (the rate window) a
        # run may have nothing to download until Redis is back.
        def under_way() -> bool:
            last = emu.inspect.last_create_at
            return len(_results(out)) >= 3 and last is not None and time.time() - last < 0.3

        wait_until_sync(under_way, "the run under way, a generation in flight", timeout=20.0)
        redis_process.stop()
        before = _media(out)
        wait_until_sync(
            lambda: _media(out) > before, "a download while Redis is down", timeout=10.0
        )
        # the sync point for the check below: the run says it noticed and paused
        head = _read_until(worker, "creates pause", timeout=20.0)
        creates = emu.inspect.creates_total  # any create sent before the stop has landed
        time.sleep(2.5)  # the outage outlasts --claim-ttl: every lease runs out meanwhile
        assert emu.inspect.creates_total == creates, "no create without Redis"
        redis_process.start()
        (rest,) = _finish([worker], timeout=60.0)
        output = head + rest
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, output
    assert "Traceback" not in output and "Redis lost the claim state" not in output
    assert "Redis unreachable" in output and "creates pause" in output
    assert "Redis reachable again after" in output
    _made_once(emu, {out: ids})
    assert emu.inspect.rate_limited_total == 0, emu.inspect.to_json()


def test_claims_import_reads_results_jsonl_when_the_journal_is_gone(
    redis_process: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A gone host's results.jsonl alone is enough: its items are done again, and
    the items that waited for it can be claimed; a directory that is not an --out
    is refused before anything is written."""
    manifest = _shots(tmp_path / "m", "an owl")
    items = {item.id: item for item in Manifest(manifest)}
    batch = batch_id(Manifest(manifest))

    def store(owner: str, site: str, client: aioredis.Redis | None = None) -> ClaimStore:
        return ClaimStore(
            client or redis_process.url,
            api_key=API_KEY,
            manifest=batch,
            owner=owner,
            ttl=0.6,
            site=site,
        )

    async def before() -> ClaimStatus:
        client = aioredis.Redis.from_url(redis_process.url)
        gone = store("gone", "site-b", client)  # never entered: no heartbeat, as if it died
        try:
            async with store("live", "site-a") as live:
                await gone.claim("shot-0", digest=item_digest(items["shot-0"]))
                await live.claim("shot-1", digest=item_digest(items["shot-1"]))
                await live.claim("shot-2", digest=item_digest(items["shot-2"]))
                await client.flushall()
                return (await live.claim("shot-0", digest=item_digest(items["shot-0"]))).status
        finally:
            await client.aclose()

    assert asyncio.run(before()) is ClaimStatus.UNKNOWN
    dead = tmp_path / "dead-host"
    dead.mkdir()
    line = {"id": "shot-0", "state": "completed", "generation_id": "g0", "path": "/b/0.png"}
    (dead / "results.jsonl").write_text(json.dumps(line) + "\n{cut sho")
    monkeypatch.setenv("LUMAAI_API_KEY", API_KEY)
    argv = ["claims", "import", str(manifest), "--redis", redis_process.url]
    assert main([*argv[:3], str(tmp_path / "m"), *argv[3:]]) == 2, "not an --out directory"
    assert main([*argv[:3], str(dead), *argv[3:]]) == 0
    assert "1 record(s) imported" in capsys.readouterr().out

    async def after() -> tuple[Claim, Claim]:
        async with store("live-2", "site-a") as live:
            done = await live.claim("shot-0", digest=item_digest(items["shot-0"]))
            other = await live.claim("shot-1", digest=item_digest(items["shot-1"]))
            return done, other

    done, other = asyncio.run(after())
    assert done.status is ClaimStatus.DONE and done.record.path == "/b/0.png"
    assert other.status in (ClaimStatus.CLAIMED, ClaimStatus.ADOPTED, ClaimStatus.TAKEN)


def test_a_state_lost_between_runs_is_noticed_by_the_next_run(
    slow_emulator: ThreadedEmulator, redis_process: RedisServer, tmp_path: Path
) -> None:
    """Two hosts finish a batch; Redis restarts empty while none runs. A rerun on
    one host re-seeds what it did and leaves the other host's items waiting (they
    are not made again); once that host has run again too, both runs end clean."""
    emu = slow_emulator
    manifest, ids = _batch(tmp_path / "shared", "shared", images=32, videos=8)
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    workers = [_spawn(manifest, out, redis_process.url, emu.base_url) for out in (a_out, b_out)]
    outputs = _finish(workers)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    by_b = set(_results(b_out))
    assert by_b and set(_results(a_out)) | by_b == set(ids)
    _restart_empty(redis_process, 0.1)

    def rerun(out: Path) -> tuple[int | Any, str]:
        worker = _spawn(manifest, out, redis_process.url, emu.base_url)
        (output,) = _finish([worker], timeout=60.0)
        assert "Traceback" not in output
        return worker.returncode, output

    status, output = rerun(a_out)
    assert status == EXIT_CLAIMS_WAIT, output
    assert "was lost since this host last worked the batch" in output
    assert f"{len(by_b)} item(s) wait (" in output and str(b_out.resolve()) in output
    assert rerun(b_out)[0] == 0
    assert rerun(a_out)[0] == 0
    assert emu.inspect.creates_total == len(ids) and emu.inspect.duplicate_creates == 0
