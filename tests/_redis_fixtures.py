"""A private ``redis-server`` for the tests: started on a free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from tests._waiting import wait_until_async

if TYPE_CHECKING:
    from lumasched.limits import Family
    from lumasched.limits.redis import RedisLimiter

__all__ = [
    "RedisServer",
    "free_port",
    "redis_process",
    "redis_server",
    "refused_port",
    "until_waiting",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def refused_port() -> Iterator[int]:
    """A port where connections are refused while the block runs: bound but never
    listening, so no server of a test running in parallel can take it meanwhile
    (a port from ``free_port`` could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


@attrs.define
class RedisServer:
    """One ``redis-server`` child process that can be stopped and started again on
    the same port (a restart loses every key: no persistence)."""

    directory: Path
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    persistent: bool = False
    """Append-only file, fsync'd on every write: a restart keeps every key (an outage)."""
    started: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on ``port``; a first start whose port was taken meanwhile (tests in
        parallel pick free ports too) moves to another one."""
        for _ in range(5):
            if self._start_once():
                self.started = True
                return
            if self.started:
                break  # a restart must keep its port: the clients know it
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _start_once(self) -> bool:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "always",
                "--dir", str(self.directory),
                "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    # the pid, not a PONG: another test's server may answer on this port
                    sock.sendall(b"INFO server\r\n")
                    reply = b""
                    while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        reply += chunk
                    if f"process_id:{self.process.pid}\r\n".encode() in reply:
                        return True
                    if b"process_id:" in reply:
                        break  # someone else's server holds the port
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _need_binary() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server shared by the whole session (tests use their own
    namespaces)."""
    _need_binary()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and restart."""
    _need_binary()
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until_waiting(limiter: RedisLimiter, family: Family, count: int) -> None:
    """Until ``count`` acquires wait in the family's queue in Redis: the sync point
    before reading what a waiter looks like (not a sleep that may be too short)."""

    async def queued() -> bool:
        return (await limiter.statistics())[family].waiting == count

    await wait_until_async(queued, f"{count} waiter(s) queued")


# --- worker processes -----------------------------------------------------------
# Run as ``python -c "from tests._redis_fixtures import main; main()" JSON``: the
# tests start several of these to share one API key's limits through Redis.

REPO = Path(__file__).resolve().parent.parent


def spawn_worker(role: str, *, stdin: bool = False, **params: object) -> subprocess.Popen[str]:
    """Start a worker process; it prints one JSON line when done (or READY).
    ``stdin``: give it a pipe (the ``burst`` role waits for a line on it)."""
    import json
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tests._redis_fixtures import main; main()",
            json.dumps({"role": role, **params}),
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    import asyncio
    import json
    import sys

    params = json.loads(sys.argv[1])
    role = params.pop("role")
    runner = {"holder": _holder, "emulator": _emulator_worker, "burst": _burst}[role]
    if role == "holder":
        result = asyncio.run(runner(**params))
    else:
        result = asyncio.run(asyncio.wait_for(runner(**params), 40))  # a traceback, not a hang
    print(json.dumps(result), flush=True)


def _limiter(url: str, namespace: str, limits: dict[str, list[float]], **kw: Any) -> RedisLimiter:
    from lumasched.limits import FamilyLimits, Limits
    from lumasched.limits.redis import RedisLimiter

    built = Limits(
        **{name: FamilyLimits(int(c), int(r), float(p)) for name, (c, r, p) in limits.items()}
    )
    return RedisLimiter(url, built, api_key="sk-shared-test-key", namespace=namespace, **kw)


async def _holder(
    url: str, namespace: str, limits: dict[str, list[float]], lease_ttl: float
) -> dict[str, object]:
    """Take two video leases, mark one submitted, say READY, and wait to be killed."""
    import asyncio
    import sys

    from lumasched.limits import Family

    async with _limiter(url, namespace, limits, lease_ttl=lease_ttl) as limiter:
        await limiter.acquire(Family.VIDEO, "pending-lease")
        await limiter.acquire(Family.VIDEO, "submitted-lease")
        await limiter.mark_submitted(Family.VIDEO, "submitted-lease", "gen-of-the-dead")
        print("READY", flush=True)
        sys.stdout.flush()
        await asyncio.sleep(3600)
    return {}


async def _burst(
    url: str, namespace: str, limits: dict[str, list[float]], leases: int, patience: float
) -> dict[str, object]:
    """With default lease settings: connect, say READY, wait for a line on stdin,
    then acquire `leases` video slots at once; report each grant's delay (None:
    not granted within `patience`) and release them."""
    import asyncio
    import sys
    import time

    import anyio

    from lumasched.limits import Family

    async with _limiter(url, namespace, limits) as limiter:
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        start = time.monotonic()
        delays: list[float | None] = [None] * leases

        async def one(n: int) -> None:
            with anyio.move_on_after(patience):
                await limiter.acquire(Family.VIDEO, f"{limiter.owner}-{n}")
                delays[n] = time.monotonic() - start

        async with anyio.create_task_group() as tg:
            for n in range(leases):
                tg.start_soon(one, n)
        for n in range(leases):
            await limiter.release(Family.VIDEO, f"{limiter.owner}-{n}")
    return {"delays": delays}


async def _emulator_worker(
    url: str,
    namespace: str,
    limits: dict[str, list[float]],
    base_url: str,
    jobs: dict[str, int],
    tasks: int,
    window_margin: float,
) -> dict[str, object]:
    """Run `jobs` creates per family through the shared limiter against the
    emulator: acquire, POST, mark submitted, poll to the end, release."""
    import asyncio
    import uuid

    import aiohttp

    from lumasched.limits import Family

    bodies = {
        Family.IMAGE: (
            "/generations/image",
            {"prompt": "a lighthouse at dawn", "model": "photon-1"},
        ),
        Family.VIDEO: ("/generations/video", {"prompt": "a lighthouse at dawn", "model": "ray-2"}),
    }
    headers = {"Authorization": "Bearer sk-shared-test-key"}
    counts = {"created": 0, "rate_limited": 0, "failed": 0}
    remaining = {Family(name): n for name, n in jobs.items()}

    async def one(session: aiohttp.ClientSession, limiter: RedisLimiter, family: Family) -> None:
        lease = uuid.uuid4().hex
        await limiter.acquire(family, lease)
        try:
            path, body = bodies[family]
            async with session.post(base_url + path, json=body, headers=headers) as resp:
                data = await resp.json()
                if resp.status == 429:
                    counts["rate_limited"] += 1
                    await limiter.note_rate_limited(family, 0.2)
                    remaining[family] += 1
                    return
                assert resp.status == 201, data
            counts["created"] += 1
            await limiter.mark_submitted(family, lease, data["id"])
            await limiter.note_success(family)
            while data["state"] not in ("completed", "failed"):
                await asyncio.sleep(0.03)
                async with session.get(
                    f"{base_url}/generations/{data['id']}", headers=headers
                ) as resp:
                    data = await resp.json()
        finally:
            await limiter.release(family, lease)

    async def loop(session: aiohttp.ClientSession, limiter: RedisLimiter, family: Family) -> None:
        while remaining[family] > 0:
            remaining[family] -= 1
            await one(session, limiter, family)

    async with (
        _limiter(
            url, namespace, limits, lease_ttl=2.0, window_margin=window_margin, poll_max=0.2
        ) as limiter,
        aiohttp.ClientSession() as session,
    ):
        await asyncio.gather(
            *(loop(session, limiter, family) for family in remaining for _ in range(tasks))
        )
        counts["round_trips"] = limiter.round_trips
    return counts
