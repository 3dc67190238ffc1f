"""What ``lumasched run`` offers an operator's tools: ``--metrics-port`` serves
``/metrics`` (Prometheus text) on 127.0.0.1 for the run's life, and
``--log-format json`` adds one JSON line per job state change to the log.

Where each output goes: the live display and the summary on stdout, every log
line (JSON or human) on stderr, so ``2> run.jsonl`` is a clean JSON stream.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType

import anyio

from lumasched._config import Settings
from lumasched.engine.scheduler import Scheduler
from lumasched.errors import ConfigurationError
from lumasched.observe import MetricsSource, SchedulerMetrics, log_job_events

__all__ = ["METRICS_EXTRA_HELP", "check_metrics_available", "observe_run"]

METRICS_EXTRA_HELP = "pip install 'lumasched[prometheus]'"


def check_metrics_available(port: int) -> None:
    """Refuse ``--metrics-port`` up front (nothing sent) when it cannot work."""
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"--metrics-port {port}: not a TCP port (0-65535)")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"--metrics-port needs prometheus_client: {METRICS_EXTRA_HELP}"
        ) from None


async def observe_run(
    stack: AsyncExitStack,
    scheduler: Scheduler,
    settings: Settings,
    *,
    metrics_port: int | None,
    linger: float,
    log_json: bool,
    stopping: anyio.Event,
) -> str | None:
    """Wire the run's metrics and JSON job events into ``stack`` (before the
    scheduler is entered, so they outlive it); returns the metrics URL."""
    if log_json:
        stack.callback(log_job_events(scheduler))
    if metrics_port is None:
        return None
    from lumasched.observe.prometheus import MetricsServer

    sources: list[MetricsSource] = [await stack.enter_async_context(SchedulerMetrics(scheduler))]
    if settings.redis_url is not None:
        # Here, not at the top: the redis client costs ~0.1 s of every run's start.
        from lumasched.limits._redis_util import account_id
        from lumasched.observe import SharedLimitsMetrics

        sources.append(
            await stack.enter_async_context(
                SharedLimitsMetrics(settings.redis_url, accounts=[account_id(settings.api_key)])
            )
        )
    try:
        server = await stack.enter_async_context(MetricsServer(sources, port=metrics_port))
    except OSError as exc:
        raise ConfigurationError(
            f"--metrics-port {metrics_port}: cannot listen on 127.0.0.1: {exc.strerror or exc}"
        ) from exc

    async def last_scrapes(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # A short batch can end between two scrapes: keep the final numbers up
        # a little (a Ctrl-C ends the wait).
        if exc_type is None and linger > 0:
            with anyio.move_on_after(linger):
                await stopping.wait()
        return False

    stack.push_async_exit(last_scrapes)
    return server.url
