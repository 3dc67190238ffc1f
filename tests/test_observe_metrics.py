"""Scheduler metrics: scraped over HTTP from a real emulator run, through a
user's Prometheus registry, and through an OpenTelemetry SDK."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from lumasched.api import ImageRequest, VideoRequest
from lumasched.engine.jobs import JobState
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
    DependencyFailed,
    DownloadError,
    GenerationFailed,
    GenerationTimeout,
)
from lumasched.limits import FamilyLimits, Limits
from lumasched.observe import SchedulerMetrics, failure_category
from lumasched.observe.otel import instrument
from lumasched.observe.prometheus import MetricsServer, register
from tests._engine_fixtures import engine
from tests._observe_fixtures import parse, scrape, total, value


async def test_scrape_moves_during_a_run_and_matches_the_counters(tmp_path: Path) -> None:
    """/metrics over HTTP: zero before, moving while jobs run, equal to counters() after."""
    async with engine(out_dir=tmp_path, latency=0.3) as (_, _, scheduler):
        metrics = SchedulerMetrics(scheduler)
        async with MetricsServer([metrics], port=0) as server:
            before = await scrape(server.url)
            assert value(before, "lumasched_creates_accepted_total") == 0
            jobs = [scheduler.submit(ImageRequest(f"a cat {i}"), key=f"i{i}") for i in range(4)]
            jobs += [
                scheduler.submit(ImageRequest("a cat fail:frame_moderation"), key="fails-mod"),
                scheduler.submit(VideoRequest("a dog fail:job_failed"), key="fails-job"),
                scheduler.submit(VideoRequest("a dog"), key="vid"),
            ]
            with anyio.fail_after(10):
                while scheduler.counters().creates < len(jobs):
                    await anyio.sleep(0.01)
            during = await scrape(server.url)
            with anyio.fail_after(10):
                while not all(job.done for job in jobs):
                    await anyio.sleep(0.01)
            after = await scrape(server.url)
            counters = scheduler.counters()

    assert value(during, "lumasched_creates_accepted_total") == len(jobs)
    assert total(during, "lumasched_jobs", state="dreaming") + total(
        during, "lumasched_jobs_finished_total"
    ) + total(during, "lumasched_jobs", state="downloading") == len(jobs)
    assert value(after, "lumasched_creates_accepted_total") == counters.creates == len(jobs)
    assert value(after, "lumasched_creates_sent_total") == counters.create_attempts
    assert value(after, "lumasched_rate_limited_total") == counters.rate_limited == 0
    assert value(after, "lumasched_downloads_total") == counters.downloads == 5
    assert value(after, "lumasched_downloaded_bytes_total") == counters.bytes_downloaded > 0
    polls = value(after, "lumasched_polls_total") + value(after, "lumasched_list_calls_total")
    assert polls == counters.polls > 0
    completed = total(after, "lumasched_jobs_finished_total", outcome="completed")
    assert completed == 5
    assert (
        value(
            after,
            "lumasched_jobs_finished_total",
            family="image",
            model="photon-1",
            outcome="completed",
        )
        == 4
    )
    assert (
        value(
            after,
            "lumasched_generations_failed_total",
            family="image",
            model="photon-1",
            category="moderation",
        )
        == 1
    )
    assert total(after, "lumasched_generations_failed_total", category="job") == 1
    assert value(after, "lumasched_generation_latency_seconds_count", family="image") == 4
    assert value(after, "lumasched_generation_latency_seconds_count", family="video") == 1
    assert value(after, "lumasched_download_duration_seconds_count", family="image") == 4
    # In seconds (a 0.3 s generation; ms would be hundreds): measured by the client from
    # the create's answer, so it may be a little under the server's 0.3 s on a busy machine.
    assert 0 < value(after, "lumasched_generation_latency_seconds_sum", family="video") < 30
    assert total(after, "lumasched_jobs") == 0
    assert value(after, "lumasched_concurrency_limit", family="video") == 3
    assert value(after, "lumasched_window_limit", family="image") == 8
    assert value(after, "lumasched_backoff_factor", family="image") == 1.0
    # Low cardinality: no job key or generation id in any label.
    keys = {job.key for job in jobs} | {job.generation_id for job in jobs}
    assert not {v for (_, labels) in after for _, v in labels} & keys


async def test_429s_show_as_rate_limited_backoff_and_pause() -> None:
    """Limits above the server's: 429s counted, back-off factor drops, pause time accrues."""
    generous = Limits(
        video=FamilyLimits(concurrency=20, requests=100, per_seconds=1.0),
        image=FamilyLimits(concurrency=20, requests=100, per_seconds=1.0),
    )
    async with engine(limits=generous) as (emu, _, scheduler):
        metrics = SchedulerMetrics(scheduler, interval=0.02)
        registry = CollectorRegistry()
        register(metrics, registry=registry)
        lowest = 1.0
        async with metrics:
            jobs = [scheduler.submit(ImageRequest(f"a cat {i}"), key=f"i{i}") for i in range(14)]
            with anyio.fail_after(20):
                while not all(job.done for job in jobs):
                    await anyio.sleep(0.02)
                    seen = parse(generate_latest(registry).decode())
                    lowest = min(lowest, value(seen, "lumasched_backoff_factor", family="image"))
            await metrics.refresh()
            final = parse(generate_latest(registry).decode())
    assert all(job.state is JobState.COMPLETED for job in jobs)
    assert emu.inspect.rate_limited_total > 0
    assert value(final, "lumasched_rate_limited_total") == emu.inspect.rate_limited_total
    requeued = value(final, "lumasched_requeues_total", family="image", reason="rate_limited")
    assert requeued == emu.inspect.rate_limited_total
    assert lowest < 1.0
    paused = value(final, "lumasched_rate_limit_paused_seconds_total", family="image")
    assert paused > 0


async def test_opentelemetry_instruments_read_the_same_numbers(tmp_path: Path) -> None:
    """A user's MeterProvider gets the counters, gauges and latency histograms."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        async with engine(out_dir=tmp_path) as (_, _, scheduler):
            metrics = SchedulerMetrics(scheduler)
            instrument(metrics, meter_provider=provider)
            async with metrics:
                jobs = [scheduler.submit(ImageRequest(f"a cat {i}"), key=f"i{i}") for i in range(3)]
                for job in jobs:
                    await job
                await metrics.refresh()
                data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    found = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    accepted = found["lumasched_creates_accepted"]
    assert [point.value for point in accepted.data.data_points] == [3]
    latency = found["lumasched_generation_latency_seconds"]
    assert latency.unit == "s"
    (point,) = latency.data.data_points
    assert point.count == 3 and dict(point.attributes) == {"family": "image"}
    limits = found["lumasched_concurrency_limit"]
    assert {p.attributes["family"]: p.value for p in limits.data.data_points} == {
        "image": 4,
        "video": 3,
    }
    assert found["lumasched_downloaded_bytes"].unit == "By"


async def test_ambiguous_creates_and_their_reconcile_outcomes() -> None:
    """Creates whose answer is lost: counted as ambiguous, and each one found by reconcile."""
    async with engine(emulator_config={"faults": {"drop_after_create": 1.0}}) as (
        _,
        _,
        scheduler,
    ):
        metrics = SchedulerMetrics(scheduler)
        jobs = [scheduler.submit(ImageRequest(f"a cat {i}"), key=f"i{i}") for i in range(3)]
        for job in jobs:
            await job
        seen = {m.name: m for m in metrics.collect()}
    assert seen["lumasched_ambiguous_creates_total"].samples[0].value == 3
    outcomes = {
        dict(s.labels)["outcome"]: s.value
        for s in seen["lumasched_reconcile_outcomes_total"].samples
    }
    assert outcomes == {"found": 3, "absent": 0, "gave_up": 0}
    assert seen["lumasched_creates_accepted_total"].samples[0].value == 3


async def test_another_thread_reads_the_last_refresh() -> None:
    """A prometheus_client server thread reads the snapshot of the last refresh, never
    the engine's live counters; the next refresh brings it up to date."""
    async with engine() as (_, _, scheduler):
        metrics = SchedulerMetrics(scheduler)
        registry = CollectorRegistry()
        register(metrics, registry=registry)
        await scheduler.submit(ImageRequest("a cat"), key="one")
        await metrics.refresh()
        await scheduler.submit(ImageRequest("a dog"), key="two")
        stale = parse((await anyio.to_thread.run_sync(generate_latest, registry)).decode())
        await metrics.refresh()
        fresh = parse((await anyio.to_thread.run_sync(generate_latest, registry)).decode())
    assert value(stale, "lumasched_creates_accepted_total") == 1
    assert value(fresh, "lumasched_creates_accepted_total") == 2


def test_failure_categories_are_few() -> None:
    """A failed job's label is a category, never its message."""
    assert failure_category(GenerationFailed("g", "Frame moderation failed")) == "moderation"
    assert failure_category(GenerationFailed("g", "Job failed")) == "job"
    assert failure_category(GenerationTimeout("g", 10.0, "dreaming")) == "timeout"
    assert failure_category(DependencyFailed("k", "dep", "failed")) == "dependency"
    assert failure_category(DownloadError("boom")) == "download"
    assert failure_category(APIStatusError(400, "bad")) == "rejected"
    assert failure_category(APIStatusError(500, "bad")) == "server_error"
    assert (
        failure_category(AmbiguousCreateError("lost", path="/x", body={}, sent_at=0.0))
        == "ambiguous"
    )
    assert failure_category(RuntimeError("x")) == "unknown"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("prometheus_client", "lumasched.observe.prometheus", "lumasched[prometheus]"),
        ("opentelemetry", "lumasched.observe.otel", "lumasched[otel]"),
    ],
)
def test_lumasched_imports_without_the_optional_extras(
    blocked: str, module: str, extra: str
) -> None:
    """Without prometheus_client / OpenTelemetry, lumasched and its CLI import; the
    exporter says which extra to install."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules[{blocked!r}] = None
        import lumasched, lumasched.observe, lumasched.cli, lumasched.cli._observe
        try:
            import {module}
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without " + {blocked!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert extra in result.stdout
