"""Observability: metrics an operator's tools can scrape, logs a machine can read.

Above the engine, which it observes through its hooks (counters, statistics,
job events) without changing it; below ``cli/``. The exporters need optional
extras and are imported on their own, so ``import lumasched`` never needs them:

- ``lumasched.observe.prometheus`` (``lumasched[prometheus]``): a collector for
  your registry and a ``/metrics`` server;
- ``lumasched.observe.otel`` (``lumasched[otel]``): instruments on your
  ``MeterProvider``.

``SchedulerMetrics`` reads one scheduler; ``SharedLimitsMetrics`` reads the
limits every host shares through Redis. ``configure_logging`` and
``log_job_events`` give JSON lines. Metric names: docs/observability.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumasched.observe._model import Kind, Metric, Sample
from lumasched.observe._scheduler import MetricsSource, SchedulerMetrics, failure_category
from lumasched.observe.logs import JsonFormatter, configure_logging, log_job_events

if TYPE_CHECKING:
    from lumasched.observe._shared import SharedLimitsMetrics


def __getattr__(name: str) -> Any:
    # Redis is imported only by those who read the shared limits.
    if name == "SharedLimitsMetrics":
        from lumasched.observe._shared import SharedLimitsMetrics

        return SharedLimitsMetrics
    raise AttributeError(f"module 'lumasched.observe' has no attribute {name!r}")


__all__ = [
    "JsonFormatter",
    "Kind",
    "Metric",
    "MetricsSource",
    "Sample",
    "SchedulerMetrics",
    "SharedLimitsMetrics",
    "configure_logging",
    "failure_category",
    "log_job_events",
]
