"""``lumasched run --metrics-port`` and ``--log-format json`` against the emulator."""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lumasched import cli
from lumasched.limits.redis import account_id
from tests import _cli_fixtures as fx
from tests._cli_fixtures import cli_env, emulator, limits_file, write_jsonl  # noqa: F401
from tests._observe_fixtures import Scrape, scrape_sync, total, value
from tests._redis_fixtures import free_port, redis_server  # noqa: F401


class _Scraper(threading.Thread):
    """Scrapes ``url`` every few ms while the CLI runs on the main thread."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.scrapes: list[Scrape] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.03):
            try:
                self.scrapes.append(scrape_sync(self.url))
            except OSError:
                continue  # not listening yet, or no longer


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line, or the test fails here


def test_metrics_scraped_during_a_run_move_and_end_at_the_results(
    cli_env: fx.ThreadedEmulator,  # noqa: F811
    limits_file: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """/metrics answers while the run lasts, its counters rise, and the last scrape
    (in the linger) equals what results.jsonl and the JSON log say."""
    items = [
        {"id": f"img-{i}", "model": "photon-flash-1", "prompt": f"a cat {i}"} for i in range(18)
    ]
    items.append({"id": "bad", "model": "photon-1", "prompt": "a cat fail:frame_moderation"})
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    port = free_port()
    scraper = _Scraper(f"http://127.0.0.1:{port}/metrics")
    scraper.start()
    try:
        code = cli.main(
            [
                "run", str(manifest), "--out", str(tmp_path / "out"),
                "--limits", str(limits_file), "--no-progress",
                "--metrics-port", str(port), "--metrics-linger", "0.6",
                "--log-format", "json",
            ]
        )  # fmt: skip
    finally:
        scraper.stop.set()
        scraper.join()
    out, err = capsys.readouterr()
    assert code == 1, out + err  # one item failed
    assert f"metrics at http://127.0.0.1:{port}/metrics" in out

    accepted = [value(s, "lumasched_creates_accepted_total") for s in scraper.scrapes]
    assert accepted == sorted(accepted), "counters never go down"
    assert len(set(accepted)) >= 2, f"the numbers moved: {accepted}"
    final = scraper.scrapes[-1]
    results = fx.read_results(tmp_path / "out")
    completed = [r for r in results.values() if r["state"] == "completed"]
    assert len(completed) == 18
    assert value(final, "lumasched_creates_accepted_total") == len(items)
    assert total(final, "lumasched_jobs_finished_total", outcome="completed") == 18
    assert total(final, "lumasched_generations_failed_total", category="moderation") == 1
    assert value(final, "lumasched_downloaded_bytes_total") == sum(r["bytes"] for r in completed)
    assert value(final, "lumasched_generation_latency_seconds_count", family="image") == 18
    assert value(final, "lumasched_window_limit", family="image") == 12
    assert cli_env.inspect.rate_limited_total == value(final, "lumasched_rate_limited_total")

    # stderr is a JSON stream: every line parses, none holds the key.
    assert fx.API_KEY not in err
    lines = _json_lines(err)
    done = [line for line in lines if line["event"] == "job.completed"]
    assert {line["job"] for line in done} == {r["id"] for r in completed}
    for line in done:
        assert line["level"] == "info" and line["family"] == "image"
        assert line["state"] == "completed" and line["generation_id"]
        assert line["duration"] >= 0 and line["time"].endswith("+00:00")
    (failed,) = [line for line in lines if line["event"] == "job.failed"]
    assert failed["job"] == "bad" and "moderation" in failed["reason"]
    assert failed["level"] == "warning"


def test_json_log_format_keeps_errors_as_json(
    cli_env: fx.ThreadedEmulator,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With --log-format json, manifest problems and the error line are JSON too."""
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": "x", "model": "nope", "prompt": "a"}])
    code = cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--log-format", "json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = _json_lines(err)
    assert lines[-1]["event"] == "cli.error" and "nothing was sent" in lines[-1]["message"]
    assert any("m.jsonl:1" in line["message"] for line in lines)
    assert cli_env.inspect.creates_total == 0


def test_metrics_port_without_prometheus_client_is_refused(
    cli_env: fx.ThreadedEmulator,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No prometheus_client: exit 2 naming the extra, before anything is sent."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "x", "model": "photon-1", "prompt": "a cat"}]
    )
    code = cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--metrics-port", "0"])
    assert code == 2
    assert "lumasched[prometheus]" in capsys.readouterr().err
    assert cli_env.inspect.creates_total == 0


def test_metrics_port_in_use_is_refused_before_creating(
    cli_env: fx.ThreadedEmulator,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A port another process listens on: exit 2 naming it; nothing created."""
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "x", "model": "photon-1", "prompt": "a cat"}]
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(
            ["run", str(manifest), "--out", str(tmp_path / "out"), "--metrics-port", str(port)]
        )
    assert code == 2
    assert f"--metrics-port {port}: cannot listen" in capsys.readouterr().err
    assert cli_env.inspect.creates_total == 0


@pytest.mark.redis
def test_run_with_redis_serves_the_shared_limits_too(
    cli_env: fx.ThreadedEmulator,  # noqa: F811
    limits_file: Path,  # noqa: F811
    tmp_path: Path,
    redis_server: str,  # noqa: F811
) -> None:
    """With --redis, /metrics also carries the account's shared limits, read from Redis."""
    items = [{"id": f"img-{i}", "model": "photon-flash-1", "prompt": f"a {i}"} for i in range(4)]
    manifest = write_jsonl(tmp_path / "m.jsonl", items)
    port = free_port()
    scraper = _Scraper(f"http://127.0.0.1:{port}/metrics")
    scraper.start()
    try:
        code = cli.main(
            [
                "run", str(manifest), "--out", str(tmp_path / "out"),
                "--limits", str(limits_file), "--no-progress", "--redis", redis_server,
                "--metrics-port", str(port), "--metrics-linger", "0.5",
            ]
        )  # fmt: skip
    finally:
        scraper.stop.set()
        scraper.join()
    assert code == 0
    final = scraper.scrapes[-1]
    account = account_id(fx.API_KEY)
    assert value(final, "lumasched_shared_redis_up") == 1
    shared = {"account": account, "family": "image"}
    assert value(final, "lumasched_shared_window_limit", **shared) == 12
    assert value(final, "lumasched_shared_concurrency_limit", **shared) == 6
    assert value(final, "lumasched_shared_concurrency_in_use", **shared) == 0
    assert value(final, "lumasched_creates_accepted_total") == 4
