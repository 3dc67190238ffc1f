"""Client-side checks that mirror the API's documented "before submission" errors.

Messages are the server's own where the docs give one ("Prompt is required",
"Loop is not supported for extend reverse", ...), so a user sees the same words
whether lumasched or Luma caught the mistake. Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from lumasched.api._models import (
    ASPECT_RATIOS,
    IMAGE_FORMATS,
    IMAGE_MODELS,
    MODIFY_MODES,
    RAY_MODELS,
    REFRAME_INT_FIELDS,
    RESOLUTIONS,
    VIDEO_MODELS,
    AudioRequest,
    CharacterRef,
    CreateRequest,
    GenerationKeyframe,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframe,
    Media,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    UpscaleRequest,
    VideoRequest,
)
from lumasched.api._rules import (
    MAX_REF_IMAGES,
    PROMPT_MAX,
    PROMPT_MIN,
    duration_rule_problem,
    loop_rule_problem,
    resolution_rule_problem,
    weight_rule_problem,
)
from lumasched.errors import Problem, ValidationError

__all__ = ["problems_of", "prompt_problem", "raise_for_problems"]

EMPTY_PROMPT_KINDS = frozenset({"reframe_image", "reframe_video", "modify_video", "audio"})
"""Kinds whose prompts (and audio's ``negative_prompt``) may be empty: the spec's
reframe default is ``""``, so an empty one means "no prompt" there."""


def prompt_problem(kind: str, value: object, *, required: bool = False) -> str | None:
    """What the API says of ``value`` as a ``kind`` request's prompt (or audio
    ``negative_prompt``); None when it is fine.

    The one rule lumasched and its emulator both apply (docs/api.md, "Prompts
    and durations"): omitted is fine unless ``required``; empty is fine for the
    kinds in ``EMPTY_PROMPT_KINDS``; any other prompt has 3 to 5000 characters,
    the limits the docs give for prompts with no exception by kind.
    """
    if value is None or (value == "" and kind in EMPTY_PROMPT_KINDS):
        return "Prompt is required" if required else None
    if not isinstance(value, str):
        return "Prompt must be a string"
    if len(value) < PROMPT_MIN:
        return f"Prompt is too short, minimum length is {PROMPT_MIN} characters"
    if len(value) > PROMPT_MAX:
        return f"Prompt is too long, maximum length is {PROMPT_MAX} characters"
    return None


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def rule(self, path: str, message: str | None) -> None:
        if message is not None:
            self.add(path, message)

    def one_of(self, path: str, value: Any, allowed: Sequence[str], *, optional: bool) -> None:
        if value is None and optional:
            return
        if value not in allowed:
            self.add(path, f"must be one of {', '.join(allowed)} (got {value!r})")

    def prompt(self, kind: str, path: str, value: Any, *, required: bool = False) -> None:
        message = prompt_problem(kind, value, required=required)
        if message is not None:
            self.add(path, message)

    def text(self, path: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            self.add(path, "must be a non-empty string")

    def callback(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
            self.add("callback_url", "must be an http:// or https:// URL")

    def weight(self, path: str, ref: ImageRef) -> None:
        self.text(f"{path}.url", ref.url)
        message = weight_rule_problem(ref.weight)
        if message is not None:
            self.add(f"{path}.weight", message)

    def refs(self, path: str, refs: Sequence[ImageRef] | None) -> None:
        if refs is None:
            return
        if len(refs) > MAX_REF_IMAGES:
            self.add(path, f"at most {MAX_REF_IMAGES} images (got {len(refs)})")
        for i, ref in enumerate(refs):
            self.weight(f"{path}[{i}]", ref)

    def character(self, ref: CharacterRef | None) -> None:
        if ref is None:
            return
        path = "character_ref.identity0.images"
        images = ref.identity0.images
        if not 1 <= len(images) <= MAX_REF_IMAGES:
            self.add(path, f"needs 1 to {MAX_REF_IMAGES} images (got {len(images)})")
        for i, url in enumerate(images):
            self.text(f"{path}[{i}]", url)

    def media(self, path: str, media: Media | None) -> None:
        if media is not None:
            self.text(f"{path}.url", media.url)

    def non_negative(self, request: ReframeImageRequest | ReframeVideoRequest) -> None:
        for name in REFRAME_INT_FIELDS:
            value = getattr(request, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                self.add(name, "expected an integer")
            elif value < 0 or (value == 0 and name.startswith("resized")):
                self.add(name, "must be positive" if name.startswith("resized") else "must be >= 0")
        for lo, hi in (("x_start", "x_end"), ("y_start", "y_end")):
            a, b = getattr(request, lo), getattr(request, hi)
            if isinstance(a, int) and isinstance(b, int) and a >= b:
                self.add(hi, f"must be greater than {lo}")


def _keyframe(c: _Checker, path: str, frame: Keyframe | None) -> None:
    if isinstance(frame, ImageKeyframe):
        c.text(f"{path}.url", frame.url)
    elif isinstance(frame, GenerationKeyframe):
        c.text(f"{path}.id", frame.id)


def _frame_type(frame: Keyframe | None) -> str | None:
    if isinstance(frame, GenerationKeyframe):
        return "generation"
    return None if frame is None else "image"


def _video(c: _Checker, r: VideoRequest) -> None:
    c.one_of("model", r.model, VIDEO_MODELS, optional=False)
    has_frames = r.keyframes is not None and (
        r.keyframes.frame0 is not None or r.keyframes.frame1 is not None
    )
    # The docs: "When image is not provided as keyframes, prompt is required."
    frames = (r.keyframes.frame0, r.keyframes.frame1) if r.keyframes is not None else ()
    has_image = any(isinstance(frame, ImageKeyframe) for frame in frames)
    c.prompt("video", "prompt", r.prompt, required=not has_image)
    c.one_of("aspect_ratio", r.aspect_ratio, ASPECT_RATIOS, optional=True)
    c.one_of("resolution", r.resolution, RESOLUTIONS, optional=True)
    if r.resolution in RESOLUTIONS:
        c.rule("resolution", resolution_rule_problem(r.model, r.resolution))
    c.rule("duration", duration_rule_problem(r.model, r.duration))
    if r.keyframes is not None:
        if not has_frames:
            c.add("keyframes", "No keyframes provided")
        _keyframe(c, "keyframes.frame0", r.keyframes.frame0)
        _keyframe(c, "keyframes.frame1", r.keyframes.frame1)
        if r.loop:
            kinds = _frame_type(r.keyframes.frame0), _frame_type(r.keyframes.frame1)
            c.rule("loop", loop_rule_problem(*kinds))
    for i, concept in enumerate(r.concepts or ()):
        c.text(f"concepts[{i}].key", concept.key)
    c.one_of("generation_type", r.generation_type, ("video",), optional=True)
    c.callback(r.callback_url)


def _image(c: _Checker, r: ImageRequest) -> None:
    c.one_of("model", r.model, IMAGE_MODELS, optional=False)
    c.prompt("image", "prompt", r.prompt, required=True)
    c.one_of("aspect_ratio", r.aspect_ratio, ASPECT_RATIOS, optional=True)
    c.one_of("format", r.format, IMAGE_FORMATS, optional=True)
    c.refs("image_ref", r.image_ref)
    c.refs("style_ref", r.style_ref)
    c.character(r.character_ref)
    if r.modify_image_ref is not None:
        c.weight("modify_image_ref", r.modify_image_ref)
    if r.sync_timeout is not None and not (
        isinstance(r.sync_timeout, int | float)
        and not isinstance(r.sync_timeout, bool)
        and 0 < r.sync_timeout < math.inf
    ):
        c.add("sync_timeout", "must be a positive number of seconds")
    c.one_of("generation_type", r.generation_type, ("image",), optional=True)
    c.callback(r.callback_url)


def _reframe(c: _Checker, r: ReframeImageRequest | ReframeVideoRequest) -> None:
    models = IMAGE_MODELS if isinstance(r, ReframeImageRequest) else RAY_MODELS
    c.one_of("model", r.model, models, optional=False)
    c.media("media", r.media)
    c.one_of("aspect_ratio", r.aspect_ratio, ASPECT_RATIOS, optional=False)
    c.prompt(r.kind, "prompt", r.prompt)
    if isinstance(r, ReframeImageRequest):
        c.one_of("format", r.format, IMAGE_FORMATS, optional=True)
    else:
        c.media("first_frame", r.first_frame)
    c.non_negative(r)
    c.callback(r.callback_url)


def _modify(c: _Checker, r: ModifyVideoRequest) -> None:
    c.one_of("model", r.model, RAY_MODELS, optional=False)
    c.media("media", r.media)
    c.one_of("mode", r.mode, MODIFY_MODES, optional=False)
    c.media("first_frame", r.first_frame)
    c.prompt("modify_video", "prompt", r.prompt)
    c.callback(r.callback_url)


def problems_of(request: CreateRequest) -> list[Problem]:
    """Every problem with ``request``, in field order; empty when it is valid."""
    c = _Checker()
    if isinstance(request, VideoRequest):
        _video(c, request)
    elif isinstance(request, ImageRequest):
        _image(c, request)
    elif isinstance(request, ReframeImageRequest | ReframeVideoRequest):
        _reframe(c, request)
    elif isinstance(request, ModifyVideoRequest):
        _modify(c, request)
    elif isinstance(request, UpscaleRequest):
        c.text("generation_id", request.generation_id)
        c.one_of("resolution", request.resolution, RESOLUTIONS, optional=True)
        c.callback(request.callback_url)
    elif isinstance(request, AudioRequest):
        c.text("generation_id", request.generation_id)
        c.prompt("audio", "prompt", request.prompt)
        c.prompt("audio", "negative_prompt", request.negative_prompt)
        c.callback(request.callback_url)
    return c.problems


def raise_for_problems(request: CreateRequest) -> None:
    problems = problems_of(request)
    if problems:
        raise ValidationError(problems)
