"""The request taxonomy: which model family a request counts against.

It lives with the wire because every layer needs it (jobs, manifests, limits,
the emulator), and none of them should depend on the limiter to know it."""

from __future__ import annotations

import enum

__all__ = ["Family", "family_of"]


class Family(enum.StrEnum):
    VIDEO = "video"
    IMAGE = "image"


_IMAGE_KINDS = frozenset({"image", "reframe_image"})
_VIDEO_KINDS = frozenset({"video", "reframe_video", "modify_video", "upscale", "audio"})


def family_of(kind: str, model: str | None = None) -> Family:
    """The family a request counts against, from its kind (and model, for legacy kinds)."""
    if kind in _IMAGE_KINDS:
        return Family.IMAGE
    if kind in _VIDEO_KINDS:
        return Family.VIDEO
    if model is not None and model.startswith("photon"):
        return Family.IMAGE
    if model is not None and model.startswith("ray"):
        return Family.VIDEO
    raise ValueError(f"unknown request kind {kind!r}")
