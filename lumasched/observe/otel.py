"""OpenTelemetry metrics (``pip install lumasched[otel]``: the API only; your
application brings the SDK and its exporters)::

    from lumasched.observe import SchedulerMetrics
    from lumasched.observe.otel import instrument

    metrics = SchedulerMetrics(scheduler)
    instrument(metrics)                      # the global MeterProvider, or meter_provider=
    async with metrics:                      # refresh the limiter's numbers every second
        ...

Counters and gauges are observable instruments read when the SDK collects;
the two latency histograms are recorded as jobs finish. Names are those of
docs/observability.md without the Prometheus ``_total`` suffix (an OTel
Prometheus exporter adds it back); units are set from the name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import (
        CallbackOptions,
        Histogram,
        Meter,
        MeterProvider,
        Observation,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "lumasched.observe.otel needs the OpenTelemetry API: pip install 'lumasched[otel]'"
    ) from exc

from lumasched.observe._model import Kind, Labels, Metric
from lumasched.observe._scheduler import MetricsSource, SchedulerMetrics

__all__ = ["instrument"]

METER_NAME = "lumasched"


def _otel_name(metric: Metric) -> str:
    return metric.name.removesuffix("_total") if metric.kind is Kind.COUNTER else metric.name


def _unit(name: str) -> str:
    if "_seconds" in name:
        return "s"
    if "bytes" in name:
        return "By"
    return "1"


def _callback(
    source: MetricsSource, name: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for metric in source.collect():
            if metric.name == name:
                return [Observation(s.value, dict(s.labels)) for s in metric.samples]
        return []

    return observe


def instrument(*sources: MetricsSource, meter_provider: MeterProvider | None = None) -> Meter:
    """Create lumasched's instruments on ``meter_provider`` (default: the global
    one) reading ``sources``; returns the meter."""
    provider = meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
    meter = provider.get_meter(METER_NAME)
    for source in sources:
        for metric in source.collect():
            name = _otel_name(metric)
            callbacks = [_callback(source, metric.name)]
            if metric.kind is Kind.COUNTER:
                meter.create_observable_counter(
                    name, callbacks, unit=_unit(name), description=metric.help
                )
            elif metric.kind is Kind.GAUGE:
                meter.create_observable_gauge(
                    name, callbacks, unit=_unit(name), description=metric.help
                )
            elif isinstance(source, SchedulerMetrics):
                histogram = meter.create_histogram(name, unit=_unit(name), description=metric.help)

                def record(
                    observed: str,
                    labels: Labels,
                    value: float,
                    *,
                    want: str = metric.name,
                    into: Histogram = histogram,
                ) -> None:
                    if observed == want:
                        into.record(value, dict(labels))

                source.add_observer(record)
    return meter
