"""The benchmarks' own logic (the makespan bound) and a tiny run of each benchmark."""

from __future__ import annotations

import bisect
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bound import best_makespan, best_schedule, closed_form_makespan

REPO = Path(__file__).resolve().parent.parent


def _within_limits(
    creates: tuple[float, ...],
    finishes: tuple[float, ...],
    concurrency: int,
    requests: int,
    per_seconds: float,
) -> bool:
    """Check a schedule independently: any half-open window of per_seconds holds at most
    `requests` creates, and no instant has more than `concurrency` jobs running."""
    ordered = sorted(creates)
    for start in ordered:
        if (
            bisect.bisect_left(ordered, start + per_seconds) - bisect.bisect_left(ordered, start)
            > requests
        ):
            return False
    events = sorted([(f, -1) for f in finishes] + [(c, 1) for c in creates])
    running = 0
    for _, delta in events:  # a finish at t frees its slot before a create at t
        running += delta
        if running > concurrency:
            return False
    return True


def test_bound_concurrency_bound_is_waves_of_latency() -> None:
    """120 jobs of 1 s under 10 concurrent (rate generous) take 12 waves of 1 s."""
    assert best_makespan(120, 1.0, concurrency=10, requests=1000, per_seconds=1.0) == 12.0


def test_bound_rate_bound_is_windows_plus_one_latency() -> None:
    """60 jobs at 20 per 2 s leave at 0, 2 and 4 s; the last ends one latency later."""
    assert best_makespan(60, 0.5, concurrency=1000, requests=20, per_seconds=2.0) == 4.5


def test_bound_when_both_limits_bind_takes_the_later_of_the_two() -> None:
    """With 5 slots of 1 s and 10 creates per 3 s, creates leave at 0,1,3,4,6,7 s."""
    schedule = best_schedule([1.0] * 30, concurrency=5, requests=10, per_seconds=3.0)
    assert sorted(set(schedule.creates)) == [0.0, 1.0, 3.0, 4.0, 6.0, 7.0]
    assert schedule.makespan == 8.0


def test_bound_of_no_jobs_is_zero() -> None:
    """An empty batch takes no time."""
    assert best_makespan(0, 1.0, concurrency=1, requests=1, per_seconds=1.0) == 0.0


def test_bound_rejects_impossible_limits() -> None:
    """Zero concurrency or a zero window is refused, not looped on."""
    with pytest.raises(ValueError):
        best_makespan(3, 1.0, concurrency=0, requests=1, per_seconds=1.0)
    with pytest.raises(ValueError):
        best_makespan(3, 1.0, concurrency=1, requests=1, per_seconds=0.0)


def test_bound_schedules_respect_both_limits_and_match_the_closed_form() -> None:
    """Random batches: the simulated schedule never breaks a limit, and agrees with the
    closed form wherever one exists."""
    rng = random.Random(7)
    for _ in range(300):
        jobs = rng.randint(1, 80)
        latency = rng.choice([0.0, 0.25, 1.0, 2.5])
        c, r, w = rng.randint(1, 12), rng.randint(1, 12), rng.choice([0.5, 1.0, 2.0])
        sched = best_schedule([latency] * jobs, concurrency=c, requests=r, per_seconds=w)
        assert _within_limits(sched.creates, sched.finishes, c, r, w)
        try:
            expected = closed_form_makespan(jobs, latency, concurrency=c, requests=r, per_seconds=w)
        except ValueError:
            continue
        assert sched.makespan == pytest.approx(expected)


def test_bound_schedule_is_tight_no_create_could_leave_earlier() -> None:
    """Moving any create earlier breaks a limit: the schedule is as early as possible."""
    rng = random.Random(11)
    for _ in range(100):
        jobs, c, r = rng.randint(2, 40), rng.randint(1, 6), rng.randint(1, 6)
        sched = best_schedule([1.0] * jobs, concurrency=c, requests=r, per_seconds=1.5)
        for i, t in enumerate(sched.creates):
            if t == 0.0:
                continue
            creates = list(sched.creates)
            finishes = list(sched.finishes)
            creates[i] -= 1e-6
            finishes[i] -= 1e-6
            assert not _within_limits(tuple(creates), tuple(finishes), c, r, 1.5)


def test_runner_help_lists_every_benchmark() -> None:
    """`python -m benchmarks --help` names every benchmark."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("makespan", "client_cost", "memory", "scale", "redis", "gallery", "all"):
        assert name in out


def test_manifest_generator_streams_valid_lines(tmp_path: Path) -> None:
    """The generator writes one JSON object per line with unique ids."""
    from benchmarks.manifest_gen import write_manifest

    path = write_manifest(tmp_path / "m.jsonl", 500, kind="video")
    items = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(items) == 500
    assert len({i["id"] for i in items}) == 500
    assert all(i["type"] == "video" and i["model"] == "ray-flash-2" for i in items)


def _run_tiny(name: str, tmp_path: Path, *extra: str) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--json", str(out), name, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=55,
    )
    document: dict[str, object] = json.loads(out.read_text())
    return document


def _metrics(document: dict[str, object]) -> set[str]:
    rows = document["rows"]
    assert isinstance(rows, list)
    return {row["metric"] for row in rows}


@pytest.mark.slow
def test_makespan_benchmark_runs_tiny(tmp_path: Path) -> None:
    """The makespan benchmark measures ratio, 429s and status requests per job."""
    doc = _run_tiny("makespan", tmp_path, "--scenario", "concurrency", "--scenario", "rate")
    assert {"makespan / bound", "429s", "status requests / job"} <= _metrics(doc)


@pytest.mark.slow
def test_makespan_cli_scenario_runs_tiny(tmp_path: Path) -> None:
    """The cli scenario times the real command from spawn to exit, split on the server's clock."""
    doc = _run_tiny("makespan", tmp_path, "--scenario", "cli-rate")
    assert {
        "makespan / bound",
        "first create to exit / bound",
        "spawn to first create",
        "last asset fetched to exit",
        "429s",
    } <= _metrics(doc)


@pytest.mark.slow
def test_client_cost_benchmark_runs_tiny(tmp_path: Path) -> None:
    """The client-cost benchmark compares lumasched with the SDK baseline in one run."""
    doc = _run_tiny("client_cost", tmp_path)
    assert {"CPU per job ratio", "wall per job ratio"} <= _metrics(doc)


def test_client_cost_runs_one_contender_alone(tmp_path: Path) -> None:
    """--contenders journal: lumasched with its journal only (a scale point), no ratio."""
    doc = _run_tiny("client_cost", tmp_path, "--contenders", "journal")
    assert "client CPU per job" in _metrics(doc)
    assert "CPU per job ratio" not in _metrics(doc)
    scenarios = {row["scenario"] for row in doc["rows"]}  # type: ignore[attr-defined]
    assert all(s.startswith("lumasched (") for s in scenarios), scenarios


@pytest.mark.slow
def test_scale_benchmark_runs_tiny(tmp_path: Path) -> None:
    """The scale benchmark reports jobs/s per size and the largest/smallest ratio."""
    doc = _run_tiny("scale", tmp_path)
    assert {"jobs / s", "jobs/s ratio (largest / smallest)"} <= _metrics(doc)


@pytest.mark.slow
def test_gallery_benchmark_runs_tiny(tmp_path: Path) -> None:
    """The gallery benchmark times the page of a large folder, first and again."""
    doc = _run_tiny("gallery", tmp_path)
    assert {"page again per 1,000 items", "page size per item"} <= _metrics(doc)


@pytest.mark.slow
def test_memory_benchmark_runs_tiny(tmp_path: Path) -> None:
    """The memory benchmark reports peak RSS for big manifests and big assets."""
    doc = _run_tiny("memory", tmp_path, "--run-seconds", "2")
    assert {"peak RSS", "peak RSS growth"} <= _metrics(doc)


@pytest.mark.slow
@pytest.mark.redis
def test_redis_benchmark_runs_tiny(tmp_path: Path) -> None:
    """The Redis benchmark compares 1 and N processes and counts Redis round trips per job."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    doc = _run_tiny("redis", tmp_path, "--processes", "2")
    assert {"throughput ratio", "Redis round trips per job"} <= _metrics(doc)
