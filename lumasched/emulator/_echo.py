"""What a generation says about itself: its ``generation_type`` and its ``request`` echo.

The docs' example response shows the request normalised: every field of the
request type present, defaults filled in, the rest ``null``. The official
SDK (1.21.0) types ``generation_type`` as ``"video" | "image"`` only, so the
edit kinds report the media they produce. Every value a client sent is echoed
unchanged (lumasched's reconcile matches on them); fields the request type
does not have are dropped, as a schema-validating server drops them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lumasched.emulator._validate import GENERATION_TYPES, CreateSpec

__all__ = ["echo_request", "response_generation_type"]

_REFRAME = (
    "aspect_ratio",
    "generation_type",
    "media",
    "model",
    "callback_url",
    "prompt",
    "grid_position_x",
    "grid_position_y",
    "x_start",
    "x_end",
    "y_start",
    "y_end",
    "resized_width",
    "resized_height",
)

FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "video": (
            "model",
            "prompt",
            "aspect_ratio",
            "loop",
            "keyframes",
            "duration",
            "resolution",
            "concepts",
            "callback_url",
            "generation_type",
        ),
        "image": (
            "model",
            "prompt",
            "aspect_ratio",
            "format",
            "image_ref",
            "style_ref",
            "character_ref",
            "modify_image_ref",
            "sync",
            "sync_timeout",
            "callback_url",
            "generation_type",
        ),
        "reframe_image": (*_REFRAME, "format"),
        "reframe_video": (*_REFRAME, "first_frame"),
        "modify_video": (
            "generation_type",
            "media",
            "mode",
            "model",
            "callback_url",
            "first_frame",
            "prompt",
        ),
        "upscale": ("callback_url", "generation_type", "resolution"),
        "audio": ("callback_url", "generation_type", "prompt", "negative_prompt"),
    }
)
"""The fields of each kind's request type in the official SDK."""


def response_generation_type(kind: str) -> str:
    """``image`` for the kinds that make an image, else ``video``."""
    return "image" if kind in ("image", "reframe_image") else "video"


def _defaults(spec: CreateSpec) -> dict[str, Any]:
    """The values the service assumes for what a body leaves out (the spec's
    defaults; a video's resolution and duration are its model's first)."""
    kind = spec.kind
    common = {"generation_type": GENERATION_TYPES[kind], "model": spec.model}
    if kind == "video":
        return {
            **common,
            "aspect_ratio": spec.aspect_ratio,
            "loop": False,
            "duration": spec.duration,
            "resolution": spec.resolution,
        }
    if kind == "image":
        return {
            **common,
            "aspect_ratio": spec.aspect_ratio,
            "format": spec.image_format,
            "sync": False,
            "sync_timeout": 60.0,
        }
    if kind in ("reframe_image", "reframe_video", "modify_video"):
        extra = {"format": spec.image_format} if kind == "reframe_image" else {}
        return {**common, "prompt": "", **extra}
    if kind == "upscale":
        return {"generation_type": common["generation_type"], "resolution": spec.resolution}
    return {"generation_type": common["generation_type"]}


def echo_request(spec: CreateSpec, body: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised ``request`` of a generation created from ``body``."""
    defaults = _defaults(spec)
    echo: dict[str, Any] = {"type": GENERATION_TYPES[spec.kind]}
    for name in FIELDS[spec.kind]:
        value = body.get(name)
        echo[name] = defaults.get(name) if value is None else value
    return echo
