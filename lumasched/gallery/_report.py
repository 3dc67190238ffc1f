"""The run's numbers as pictures: throughput against the limit-bound optimum,
concurrency and create-window use over time, latency per family, status
requests per job and cost. Everything is rebuilt from the items' timings (and
the limits and counters the run wrote down), so an older folder gets a report
too."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import attrs

from lumasched.api import Family
from lumasched.engine.events import Counters
from lumasched.gallery._collect import Item
from lumasched.gallery._svg import PALETTE, Series, bars, lines
from lumasched.limits import Limits

__all__ = ["Report", "build_report", "report_meta"]

_FAMILIES = ("video", "image")
_SAMPLES = 120


@attrs.frozen
class Report:
    charts: list[str]
    """Inline SVG, one chart each."""
    facts: list[tuple[str, str]]
    """(name, value) lines shown above the charts."""


def build_report(items: Sequence[Item], meta: dict[str, Any]) -> Report:
    limits = meta.get("limits") if isinstance(meta.get("limits"), dict) else {}
    assert isinstance(limits, dict)
    counters = meta.get("counters") if isinstance(meta.get("counters"), dict) else {}
    assert isinstance(counters, dict)
    created = [i for i in items if i.created is not None]
    facts = _facts(items, created, counters)
    if not created:
        return Report(charts=[], facts=facts)
    start = min(i.queued or i.created or 0.0 for i in created)
    charts = [
        _throughput(items, start, limits),
        _concurrency(created, start, limits),
        _window(created, start, limits),
        _latency(items),
        _cost(items),
    ]
    return Report(charts=[c for c in charts if c], facts=facts)


def _families(items: Sequence[Item]) -> list[str]:
    present = {i.family for i in items}
    return [f for f in (*_FAMILIES, *sorted(present - set(_FAMILIES))) if f in present]


def _family_limits(limits: dict[str, Any], family: str) -> dict[str, float]:
    entry = limits.get(family)
    return entry if isinstance(entry, dict) else {}


def _throughput(items: Sequence[Item], start: float, limits: dict[str, Any]) -> str:
    done = sorted(i.completed - start for i in items if i.completed is not None)
    if not done:
        return ""
    actual = [(0.0, 0.0)] + [(t, n + 1.0) for n, t in enumerate(done)]
    series = [Series("completed", actual, PALETTE[0], step=True)]
    best: list[float] = []
    for family in _families(items):
        lim = _family_limits(limits, family)
        latencies = [x for i in items if i.family == family and (x := i.latency) is not None]
        count = sum(1 for i in items if i.family == family and i.completed is not None)
        if lim and latencies and count:
            mean = sum(latencies) / len(latencies)
            best.extend(_fastest(count, mean, int(lim["concurrency"]), lim))
    if best:
        best.sort()
        points = [(0.0, 0.0)] + [(t, n + 1.0) for n, t in enumerate(best)]
        series.append(Series("limit-bound optimum", points, PALETTE[1], dashed=True, step=True))
    return lines("Completed items over time", series)


def _fastest(count: int, latency: float, concurrency: int, lim: dict[str, float]) -> list[float]:
    """When ``count`` generations of one family would end if each were created as
    early as the limits allow (a free slot, room in the sliding window) and each
    took ``latency``: the best any scheduler could do with this account."""
    requests, window = int(lim["requests"]), float(lim["per_seconds"])
    created: list[float] = []
    ended: list[float] = []
    for k in range(count):
        at = 0.0
        if k >= requests:
            at = max(at, created[k - requests] + window)
        if k >= concurrency:
            at = max(at, ended[k - concurrency])  # ends in creation order: latency is one
        created.append(at)
        ended.append(at + latency)
    return ended


def _timeline(intervals: Sequence[tuple[float, float]], until: float) -> list[tuple[float, float]]:
    """How many intervals cover each moment: a staircase of (t, count)."""
    changes = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    points = [(0.0, 0.0)]
    count = 0
    for at, step in changes:
        count += step
        points.append((min(at, until), float(count)))
    return points


def _concurrency(created: Sequence[Item], start: float, limits: dict[str, Any]) -> str:
    until = max((i.completed or i.created or start) for i in created) - start
    series: list[Series] = []
    for index, family in enumerate(_families(created)):
        spans = [
            (i.created - start, (i.completed or i.downloaded or until + start) - start)
            for i in created
            if i.family == family and i.created is not None
        ]
        color = PALETTE[index * 2 % len(PALETTE)]
        series.append(Series(f"{family} in flight", _timeline(spans, until), color, step=True))
        cap = _family_limits(limits, family).get("concurrency")
        if cap:
            series.append(Series(f"{family} cap", [(0.0, cap), (until, cap)], color, dashed=True))
    return lines("Generations in flight against the concurrency cap", series)


def _window(created: Sequence[Item], start: float, limits: dict[str, Any]) -> str:
    until = max(i.created or start for i in created) - start
    series: list[Series] = []
    for index, family in enumerate(_families(created)):
        lim = _family_limits(limits, family)
        window = float(lim.get("per_seconds", 60.0))
        times = sorted(i.created - start for i in created if i.family == family and i.created)
        if not times:
            continue
        points = []
        for k in range(_SAMPLES + 1):
            t = until * k / _SAMPLES
            points.append(
                (t, float(bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window)))
            )
        color = PALETTE[index * 2 % len(PALETTE)]
        series.append(Series(f"{family} creates in window", points, color))
        if lim.get("requests"):
            rate = float(lim["requests"])
            series.append(Series(f"{family} limit", [(0.0, rate), (until, rate)], color, True))
    title = "Creates in the sliding window against the rate limit"
    return lines(title, series) if series else ""


def _latency(items: Sequence[Item]) -> str:
    by_family = {
        f: [x for i in items if i.family == f and (x := i.latency) is not None]
        for f in _families(items)
    }
    values = [x for xs in by_family.values() for x in xs]
    if not values:
        return ""
    bins = 12
    top = max(values) or 1.0
    width = top / bins
    labels = [
        f"{width * (k + 0.5):.0f}s" if width >= 1 else f"{width * (k + 0.5):.1f}s"
        for k in range(bins)
    ]
    groups = []
    for index, (family, xs) in enumerate(by_family.items()):
        counts = [0] * bins
        for x in xs:
            counts[min(bins - 1, int(x / width))] += 1
        groups.append(
            Series(family, [(k, float(n)) for k, n in enumerate(counts)], PALETTE[index * 2])
        )
    return bars("Latency, create to end (items per bin)", labels, groups, x_label="seconds")


def _cost(items: Sequence[Item]) -> str:
    families = _families(items)
    spent = [
        sum(i.cost_cents or 0.0 for i in items if i.family == f and i.generation_id) / 100
        for f in families
    ]
    if not any(spent):
        return ""
    series = Series("US$", [(k, v) for k, v in enumerate(spent)], PALETTE[2])
    return bars("Estimated cost by family (US$)", families, [series])


def _facts(
    items: Sequence[Item], created: Sequence[Item], counters: dict[str, Any]
) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    states: dict[str, int] = {}
    for i in items:
        states[i.state] = states.get(i.state, 0) + 1
    facts.append(("items", ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"))
    if created:
        start = min(i.queued or i.created or 0.0 for i in created)
        end = max(i.downloaded or i.completed or i.created or 0.0 for i in created)
        done = sum(1 for i in items if i.state == "completed")
        facts.append(("wall time", f"{end - start:.1f} s"))
        if end > start:
            facts.append(("throughput", f"{done / (end - start) * 60:.1f} items/min"))
    polls = counters.get("polls")
    creates = counters.get("creates")
    if isinstance(polls, int) and isinstance(creates, int) and creates:
        facts.append(("status requests per job", f"{polls / creates:.2f} (last run)"))
    rate_limited = counters.get("rate_limited")
    if isinstance(rate_limited, int):
        facts.append(("429 answers", f"{rate_limited} (last run)"))
    cost = sum(i.cost_cents or 0.0 for i in items if i.generation_id)
    facts.append(("estimated cost", f"${cost / 100:,.2f}"))
    return facts


def report_meta(limits: Limits, counters: Counters | None) -> dict[str, Any]:
    """What a run keeps in its journal for the report: the limits it ran under and
    its counters (status requests, 429s), which the items alone cannot tell."""
    meta: dict[str, Any] = {
        "limits": {
            str(family): attrs.asdict(limits[family]) for family in (Family.VIDEO, Family.IMAGE)
        }
    }
    if counters is not None:
        meta["counters"] = {
            name: value
            for name, value in attrs.asdict(counters, recurse=False).items()
            if isinstance(value, int)
        }
    return meta
