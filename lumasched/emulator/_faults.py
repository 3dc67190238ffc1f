"""Seeded dice for fault injection, and the current ``Faults`` settings."""

from __future__ import annotations

import random

from lumasched.emulator._config import Faults
from lumasched.emulator._stats import Inspector

__all__ = ["FaultInjector"]


class FaultInjector:
    """Decides, request by request, whether a configured fault fires."""

    def __init__(self, faults: Faults, rng: random.Random, inspector: Inspector):
        self.faults = faults
        self._rng = rng
        self.inspect = inspector

    def _roll(self, rate: float, name: str) -> bool:
        if rate <= 0.0 or self._rng.random() >= rate:
            return False
        self.inspect.count(self.inspect.faults_injected, name)
        return True

    def status_for(self, route: str) -> int | None:
        """A status to answer instead of serving ``route`` (5xx or 429), or None."""
        faults = self.faults
        if self._roll(faults.rate_for(faults.server_errors, route), "server_error"):
            return faults.server_error_status
        if self._roll(faults.rate_for(faults.rate_limits, route), "rate_limit"):
            return 429
        return None

    def drop_after_create(self) -> bool:
        return self._roll(self.faults.drop_after_create, "drop_after_create")

    def cut_download(self) -> bool:
        return self._roll(self.faults.cut_downloads, "cut_download")

    def url_expired(self, issued_at: float) -> bool:
        cutoff = self.faults.expire_urls_issued_before
        return cutoff is not None and issued_at < cutoff
