"""Helpers for the observability tests: parse a Prometheus scrape into numbers."""

from __future__ import annotations

import urllib.request

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Scrape:
    """Every sample of an exposition: (sample name, sorted labels) -> value."""
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(scrape: Scrape, name: str, **labels: str) -> float:
    """One sample's value (0 if absent, as Prometheus treats a missing series)."""
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scrape: Scrape, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= set(ls))


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


def scrape_sync(url: str, timeout: float = 2.0) -> Scrape:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode())
