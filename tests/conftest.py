"""Suite-wide hygiene: what one test does to process-global state, the next never sees."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_lumasched_logger() -> Iterator[None]:
    """``lumasched.cli.main`` run in-process configures the ``lumasched`` logger (its own
    handler, no propagation), which would hide later tests' log lines from ``caplog``."""
    target = logging.getLogger("lumasched")
    saved = (target.handlers[:], target.level, target.propagate, target.filters[:])
    yield
    target.handlers[:], target.level, target.propagate, target.filters[:] = saved
