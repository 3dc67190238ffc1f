"""The metrics as plain data, independent of any exporter: a ``Metric`` is one
family (name, kind, help, samples); a ``Histogram`` accumulates observations
into fixed buckets. Prometheus and OpenTelemetry each translate these."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence

import attrs

__all__ = [
    "DOWNLOAD_BUCKETS",
    "LATENCY_BUCKETS",
    "Histogram",
    "HistogramSample",
    "Kind",
    "Labels",
    "Metric",
    "Sample",
]

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1200.0)
"""Generation latency (create to terminal), seconds: images take seconds, videos minutes."""
DOWNLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Kind(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@attrs.frozen
class Sample:
    labels: Labels
    value: float


@attrs.frozen
class HistogramSample:
    labels: Labels
    buckets: tuple[tuple[float, int], ...]
    """Cumulative counts per upper bound (``+Inf`` last)."""
    count: int
    sum: float


@attrs.frozen
class Metric:
    """One metric family. ``name`` carries its unit; a counter's ends in ``_total``."""

    name: str
    kind: Kind
    help: str
    samples: tuple[Sample, ...] = ()
    histograms: tuple[HistogramSample, ...] = ()


class Histogram:
    """Observations in fixed buckets, per label set (a handful of families)."""

    def __init__(self, name: str, help: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.help = help
        self.bounds = tuple(bounds)
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self._series.setdefault(labels, ([0] * (len(self.bounds) + 1), [0.0]))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def metric(self) -> Metric:
        out = []
        for labels, (counts, total) in sorted(self._series.items()):
            cumulative, running = [], 0
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                running += n
                cumulative.append((bound, running))
            out.append(HistogramSample(labels, tuple(cumulative), running, total[0]))
        return Metric(self.name, Kind.HISTOGRAM, self.help, histograms=tuple(out))
