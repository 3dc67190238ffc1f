"""Prometheus exposition through ``prometheus_client`` (``pip install lumasched[prometheus]``).

Register with your own registry (the default one unless you say)::

    from lumasched.observe import SchedulerMetrics
    from lumasched.observe.prometheus import register

    metrics = SchedulerMetrics(scheduler)
    register(metrics)                       # prometheus_client.REGISTRY
    async with metrics:                     # refresh the limiter's numbers every second
        ...

or serve ``/metrics`` yourself, refreshed at each scrape, for as long as the
``async with`` lasts (what ``lumasched run --metrics-port`` does)::

    async with MetricsServer([metrics], port=9464):
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Self

try:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.core import (
        Metric as PromMetric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "lumasched.observe.prometheus needs prometheus_client: pip install 'lumasched[prometheus]'"
    ) from exc

from aiohttp import web

from lumasched.observe._model import HistogramSample, Kind, Metric, Sample
from lumasched.observe._scheduler import MetricsSource

__all__ = ["LumaschedCollector", "MetricsServer", "register"]

logger = logging.getLogger("lumasched.observe")

DEFAULT_HOST = "127.0.0.1"


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _family(metric: Metric) -> PromMetric:
    labelled: tuple[Sample | HistogramSample, ...] = (*metric.samples, *metric.histograms)
    names = [name for name, _ in labelled[0].labels] if labelled else []
    if metric.kind is Kind.HISTOGRAM:
        hist = HistogramMetricFamily(metric.name, metric.help, labels=names)
        for h in metric.histograms:
            buckets = [(_bound(bound), float(n)) for bound, n in h.buckets]
            hist.add_metric([v for _, v in h.labels], buckets, h.sum)
        return hist
    cls = CounterMetricFamily if metric.kind is Kind.COUNTER else GaugeMetricFamily
    family = cls(metric.name, metric.help, labels=names)
    for sample in metric.samples:
        family.add_metric([v for _, v in sample.labels], sample.value)
    return family


class LumaschedCollector(Collector):
    """A ``prometheus_client`` collector over lumasched metric sources."""

    def __init__(self, sources: Sequence[MetricsSource]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[PromMetric]:
        for source in self.sources:
            for metric in source.collect():
                yield _family(metric)


def register(*sources: MetricsSource, registry: CollectorRegistry = REGISTRY) -> LumaschedCollector:
    """Register ``sources`` with ``registry``; returns the collector (to unregister)."""
    collector = LumaschedCollector(sources)
    registry.register(collector)
    return collector


class MetricsServer:
    """``GET /metrics`` on ``host:port`` (127.0.0.1 by default; port 0 picks one),
    refreshing every source before it answers."""

    def __init__(
        self,
        sources: Sequence[MetricsSource],
        *,
        port: int,
        host: str = DEFAULT_HOST,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.sources = list(sources)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(LumaschedCollector(self.sources))
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        for source in self.sources:
            try:
                await source.refresh()
            except Exception:
                # Serve the rest (and the last known numbers) rather than fail the scrape.
                logger.warning("metrics: refreshing %r failed", source, exc_info=True)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
