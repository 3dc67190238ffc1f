"""The eight documented failure reasons, and how a test makes each one happen.

Every reason the docs list under "After submission" can end a generation:
by rate (``EmulatorConfig.failure_rates``), or on demand with a trigger in the
prompt (``fail:KEY``, e.g. ``"a cat fail:frame_moderation"``). Moderation and
dispatch failures happen before dreaming, the others after it, as the docs'
wording suggests; a failed generation is refunded either way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from types import MappingProxyType

import attrs

__all__ = ["FAILURE_REASONS", "Failure", "failure_rates", "pick_failure"]


@attrs.frozen
class Failure:
    reason: str
    """The ``failure_reason`` text, as documented."""
    early: bool
    """Fails at the end of the queue, before dreaming."""


FAILURE_REASONS: Mapping[str, Failure] = MappingProxyType(
    {
        "blacklisted": Failure("Contains blacklisted words", early=True),
        "unreadable_frames": Failure("Failed to read user input frames", early=True),
        "frame_moderation": Failure("Frame moderation failed", early=True),
        "prompt_moderation": Failure("Advanced prompt moderation failed", early=True),
        "prompt_processing": Failure("Prompt processing failed", early=True),
        "dispatch": Failure("Error dispatching job", early=True),
        "job_failed": Failure("Job failed", early=False),
        "callback": Failure("Error processing callback", early=False),
    }
)
"""Key (for rates and ``fail:KEY`` triggers) -> the documented failure."""

_TRIGGER = re.compile(r"\bfail:([a-z_]+)\b", re.IGNORECASE)


def failure_rates(value: Mapping[str, float]) -> Mapping[str, float]:
    """Checked ``{key: probability}`` (a converter for ``EmulatorConfig``)."""
    rates = dict(value)
    for key, rate in rates.items():
        if key not in FAILURE_REASONS:
            known = ", ".join(FAILURE_REASONS)
            raise ValueError(f"unknown failure reason {key!r} (expected one of {known})")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"failure rate for {key!r} must be within [0, 1], got {rate!r}")
    return MappingProxyType(rates)


def pick_failure(
    prompt: str,
    input_urls: tuple[str, ...],
    rates: Mapping[str, float],
    rng: random.Random,
    blacklist: re.Pattern[str] | None,
    *,
    inputs_unreadable: bool = False,
) -> Failure | None:
    """How a new job will fail, or None: a ``fail:KEY`` trigger first, then the
    blacklist and unreadable inputs (``inputs_unreadable``: the emulator could not
    read one; or a URL containing ``unreachable``), then the rates."""
    for match in _TRIGGER.finditer(prompt):
        failure = FAILURE_REASONS.get(match.group(1).lower())
        if failure is not None:
            return failure
    if blacklist is not None and blacklist.search(prompt):
        return FAILURE_REASONS["blacklisted"]
    if inputs_unreadable or any("unreachable" in url for url in input_urls):
        return FAILURE_REASONS["unreadable_frames"]
    for key, rate in rates.items():
        if rate and rng.random() < rate:
            return FAILURE_REASONS[key]
    return None
