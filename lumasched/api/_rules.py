"""The documented request rules, in one table that the client and the emulator both apply.

``lumasched.api`` checks a request with these rules before anything is sent;
the emulator checks the JSON body it receives with the same rules and answers
400 with the same words. docs/api.md promises the two never disagree, and
tests/test_api_rules_table.py enumerates every row on both sides.

Sources: the Dream Machine docs ("Errors", "Video Generation", "Image
Generation") and the official SDK's types. Where they are silent the choice
is the safer one and is marked so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import attrs

__all__ = [
    "LOOP_REFUSED",
    "MAX_REF_IMAGES",
    "PROMPT_MAX",
    "PROMPT_MIN",
    "VIDEO_MODEL_RULES",
    "WEIGHTED_REFS",
    "WEIGHT_RANGE",
    "VideoModelRules",
    "duration_rule_problem",
    "loop_rule_problem",
    "resolution_rule_problem",
    "weight_rule_problem",
]

PROMPT_MIN = 3
PROMPT_MAX = 5000
MAX_REF_IMAGES = 4


@attrs.frozen
class VideoModelRules:
    """What one video model accepts; the first entry of each is its default."""

    resolutions: tuple[str, ...]
    durations: tuple[str, ...]


_RAY2 = VideoModelRules(resolutions=("720p", "540p", "1080p", "4k"), durations=("5s", "9s"))

VIDEO_MODEL_RULES: Mapping[str, VideoModelRules] = MappingProxyType(
    {
        # The SDK types: duration "5s" | "9s", resolution 540p/720p/1080p/4k.
        "ray-2": _RAY2,
        "ray-flash-2": _RAY2,
        # Ray 1.6 predates the resolution and duration parameters (the docs show
        # them for Ray 2 only): what it made, 5 s at 720p, is all it accepts.
        "ray-1-6": VideoModelRules(resolutions=("720p",), durations=("5s",)),
    }
)

WEIGHT_RANGE = (0.0, 1.0)
"""Every image weight (``image_ref``, ``style_ref``, ``modify_image_ref``):
the docs give 0.0 to 1.0 ("something between 0.0 and 0.1" for colour changes,
1.0 in the modify example)."""

WEIGHTED_REFS = ("image_ref", "style_ref", "modify_image_ref")

LOOP_REFUSED: Mapping[tuple[str | None, str | None], str] = MappingProxyType(
    {
        ("image", "image"): "Loop is not supported for keyframes",
        # "when frame1 is given (aka extend reverse) loop is not supported":
        # read literally, a lone frame1 of either type.
        (None, "image"): "Loop is not supported for extend reverse",
        (None, "generation"): "Loop is not supported for extend reverse",
        ("generation", "image"): "Loop is not supported for interpolate video to image",
        ("image", "generation"): "Loop is not supported for interpolate image to video",
        ("generation", "generation"): "Loop is not supported for interpolate between two videos",
    }
)
"""(frame0 type, frame1 type) -> the server's message when ``loop`` is true.
Combinations not listed (a lone ``frame0``, no keyframes) may loop."""


def _rules(model: object) -> VideoModelRules | None:
    return VIDEO_MODEL_RULES.get(model) if isinstance(model, str) else None


def resolution_rule_problem(model: object, value: object) -> str | None:
    """Why ``value`` is not a resolution ``model`` makes (None: fine or omitted).
    An unknown model is the model check's problem, not this one's."""
    rules = _rules(model)
    if value is None or rules is None or value in rules.resolutions:
        return None
    return f"{model} supports resolution {', '.join(rules.resolutions)} (got {value!r})"


def duration_rule_problem(model: object, value: object) -> str | None:
    """Why ``value`` is not a duration ``model`` makes (None: fine or omitted)."""
    rules = _rules(model)
    if value is None or rules is None or value in rules.durations:
        return None
    return f"{model} supports duration {', '.join(rules.durations)} (got {value!r})"


def weight_rule_problem(value: object) -> str | None:
    """Why ``value`` is not an image weight (None: fine or omitted)."""
    if value is None:
        return None
    low, high = WEIGHT_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"must be a number between {low:g} and {high:g}"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g} (got {value!r})"
    return None


def loop_rule_problem(frame0: str | None, frame1: str | None) -> str | None:
    """The server's message for ``loop: true`` with keyframes of these types, if refused."""
    return LOOP_REFUSED.get((frame0, frame1))
