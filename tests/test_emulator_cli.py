"""``lumasched emulator`` / ``python -m lumasched.emulator`` as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from lumasched.emulator import main

pytestmark = pytest.mark.slow


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serves_prints_base_url_and_stops_on_sigterm(tmp_path):
    """Prints the base URL first, serves API and stats, logs requests at -v, exits 0 on SIGTERM."""
    limits = tmp_path / "limits.toml"
    limits.write_text("[video]\nconcurrency = 3\n")
    key = "lm-secret-cli-key"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lumasched.emulator",
            "--port",
            "0",
            "--api-key",
            key,
            "--limits",
            str(limits),
            "--speed",
            "100",
            "--seed",
            "1",
            "-v",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/dream-machine/v1")
        assert _get(f"{base_url}/ping", key) == (200, {"message": "pong"})
        assert _get(f"{base_url}/ping")[0] == 401
        origin = base_url.removesuffix("/dream-machine/v1")
        assert _get(f"{origin}/_emulator/stats")[0] == 401
        status, stats = _get(f"{origin}/_emulator/stats", key)
        assert status == 200 and stats["requests_by_route"] == {"ping": 2}
        assert stats["unauthorized"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "GET /dream-machine/v1/ping -> 200" in err
    assert "GET /dream-machine/v1/ping -> 401" in err
    assert key not in out + err


def test_bad_limits_file_exits_2(tmp_path, capsys):
    """An invalid limits file is reported on stderr with exit code 2, nothing served."""
    limits = tmp_path / "limits.toml"
    limits.write_text("[video]\nconcurrency = -1\n")
    assert main(["--port", "0", "--limits", str(limits)]) == 2
    assert "concurrency" in capsys.readouterr().err
