"""What every benchmark shares: result rows, CPU/wall/RSS measurement, child processes.

Client CPU is measured in the process that runs the client and nothing else:
the emulator always runs in a process of its own (``EmulatorProcess``) so its
CPU never counts against the client, and each measurement that reports peak
RSS runs in a fresh child (``run_child``) whose ``ru_maxrss`` covers exactly
that measurement.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
API_KEY = "lm-benchmark-key"


@dataclass
class Row:
    """One measured figure; ``ok`` is None when the figure has no goal."""

    benchmark: str
    scenario: str
    metric: str
    value: float
    unit: str = ""
    goal: str = ""
    ok: bool | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """What one benchmark returns: the rows for the table and raw details for the JSON."""

    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row


@dataclass
class Usage:
    """Wall and CPU seconds of this process over a block, and its peak RSS so far."""

    wall: float = 0.0
    cpu: float = 0.0
    user: float = 0.0
    system: float = 0.0
    max_rss_mb: float = 0.0


@contextlib.contextmanager
def measure() -> Iterator[Usage]:
    """Measure the current process (all its threads) over the ``with`` block."""
    usage = Usage()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    try:
        yield usage
    finally:
        usage.wall = time.perf_counter() - wall0
        usage.cpu = time.process_time() - cpu0
        after = resource.getrusage(resource.RUSAGE_SELF)
        usage.user = after.ru_utime - before.ru_utime
        usage.system = after.ru_stime - before.ru_stime
        usage.max_rss_mb = peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ``ru_maxrss`` in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "lumasched"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out + ("+dirty" if dirty else "")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("LUMASCHED_REDIS_URL", None)
    env.pop("LUMAAI_BASE_URL", None)
    env["LUMAAI_API_KEY"] = API_KEY
    if extra:
        env.update(extra)
    return env


def run_child(target: str, kwargs: Mapping[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh interpreter and return its result.

    The child adds ``usage`` (its wall and CPU over the call) and ``max_rss_mb``
    (its peak RSS over its whole life, imports included) to the dict the function
    returns.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", target, json.dumps(dict(kwargs))],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark child {target} exited {proc.returncode}:\n{proc.stderr[-12000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"benchmark child {target} printed no result:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def wait4_rss_mb(proc: subprocess.Popen[Any]) -> tuple[int, float]:
    """Reap ``proc`` and return its exit status and peak RSS in MB (from ``wait4``)."""
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, rusage.ru_maxrss / 1024.0


class EmulatorProcess:
    """``python -m lumasched.emulator`` in a process of its own; yields its base URL.

    ``args`` are the emulator's command-line options (limits file, speed, latency,
    asset sizes); the API key and port are chosen here.
    """

    def __init__(self, args: list[str] | None = None, *, api_key: str = API_KEY) -> None:
        self.args = list(args or [])
        self.api_key = api_key
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in __exit__)

    def __enter__(self) -> EmulatorProcess:
        cmd = [
            sys.executable,
            "-m",
            "lumasched.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.__exit__(None, None, None)
            self._stderr.seek(0)
            raise RuntimeError(f"emulator did not start: {line!r}\n{self._stderr.read()[-4000:]}")
        self.base_url = line
        return self

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict[str, Any]:
        """The emulator's inspection document (what the client did)."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.root_url}/_emulator/stats",
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class RedisServer:
    """A private ``redis-server`` on a free port (never the system one on 6379)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lumasched-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.command("PING")
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("redis-server did not start")

    def command(self, *args: str) -> str:
        """Send one command over RESP and return the raw reply (for INFO and PING)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            parts = [f"*{len(args)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            sock.sendall("".join(parts).encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"+") and data.endswith(b"\r\n"):
                    break
                if data.startswith(b"$"):
                    header, _, rest = data.partition(b"\r\n")
                    if len(rest) >= int(header[1:]) + 2:
                        break
                if data.startswith(b"-"):
                    raise OSError(data.decode(errors="replace"))
            return data.decode(errors="replace")

    def commandstats(self) -> dict[str, int]:
        """Calls per command so far (``INFO commandstats``), INFO itself excluded."""
        calls: dict[str, int] = {}
        for line in self.command("INFO", "commandstats").splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name, _, rest = line.partition(":")
            fields = dict(item.split("=", 1) for item in rest.split(","))
            cmd = name.removeprefix("cmdstat_")
            if cmd not in ("info", "ping"):
                calls[cmd] = int(fields["calls"])
        return calls

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def ratio_ok(value: float, limit: float) -> bool:
    return value <= limit


def fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"
