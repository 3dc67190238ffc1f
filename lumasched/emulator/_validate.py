"""Create-request validation with the service's documented 400 messages.

The messages listed in the docs' "Errors" section are reproduced verbatim;
checks the docs do not describe (unknown model, aspect ratio, ...) use messages
of the same shape and are the emulator's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from lumasched.api import Family, family_of
from lumasched.api._models import (
    ASPECT_RATIOS,
    IMAGE_FORMATS,
    IMAGE_MODELS,
    MODIFY_MODES,
    RAY_MODELS,
    REFRAME_INT_FIELDS,
    RESOLUTIONS,
    VIDEO_MODELS,
)
from lumasched.api._rules import (
    MAX_REF_IMAGES,
    VIDEO_MODEL_RULES,
    duration_rule_problem,
    loop_rule_problem,
    resolution_rule_problem,
    weight_rule_problem,
)
from lumasched.api._validation import prompt_problem

__all__ = [
    "CONCEPTS",
    "GENERATION_TYPES",
    "ApiError",
    "CreateSpec",
    "validate_create",
]

MAX_REFS = MAX_REF_IMAGES

CONCEPTS: tuple[str, ...] = (
    "aerial",
    "aerial_drone",
    "bolt_cam",
    "crane_down",
    "crane_up",
    "dolly_zoom",
    "handheld",
    "orbit_left",
    "orbit_right",
    "pan_left",
    "pan_right",
    "pull_out",
    "push_in",
    "static",
    "tilt_down",
    "tilt_up",
    "truck_left",
    "truck_right",
    "zoom_in",
    "zoom_out",
)

GENERATION_TYPES: Mapping[str, str] = {
    "video": "video",
    "image": "image",
    "reframe_image": "reframe_image",
    "reframe_video": "reframe_video",
    "modify_video": "modify_video",
    "upscale": "upscale_video",
    "audio": "add_audio",
}
"""Request kind -> the ``generation_type`` its body carries and its generation reports."""


class ApiError(Exception):
    """An HTTP error answer ``{"detail": ...}``."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def bad(detail: str) -> ApiError:
    return ApiError(400, detail)


class SourceGeneration(Protocol):
    """What validation needs to know about a referenced generation."""

    @property
    def media(self) -> str: ...

    @property
    def aspect_ratio(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def spec(self) -> CreateSpec: ...

    def state_now(self) -> str: ...


Lookup = Callable[[str], SourceGeneration | None]


@attrs.frozen
class CreateSpec:
    """A valid create request, digested."""

    kind: str
    model: str
    media: str
    """``image`` or ``video``: what the finished generation holds."""
    aspect_ratio: str
    resolution: str = "720p"
    duration: str = "5s"
    image_format: str = "jpg"
    prompt: str = ""
    source_id: str | None = None
    """The generation an upscale/audio request works on."""
    input_urls: tuple[str, ...] = ()
    inputs_unreadable: bool = False
    """An input URL could not be read at create (the job fails early)."""
    audio: bool = False
    """The video has a sound track (after ``add_audio``, and upscales of such)."""

    @property
    def seconds(self) -> int:
        return int(self.duration.removesuffix("s"))

    @property
    def family(self) -> Family:
        return family_of(self.kind)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _require_url(value: Any, where: str) -> str:
    if not isinstance(value, Mapping) or not isinstance(value.get("url"), str):
        raise bad(f"{where}.url is required")
    url: str = value["url"]
    if not url.startswith(("http://", "https://")):
        raise bad(f"{where}.url must be an http(s) URL")
    return url


def _check_choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(key)
    if value is None:
        return default
    if value not in allowed:
        raise bad(f"Invalid {key} {value!r}: expected one of {', '.join(allowed)}")
    return str(value)


def _check_prompt(
    body: Mapping[str, Any], kind: str, key: str = "prompt", *, required: bool = False
) -> str:
    """The prompt ``key`` of ``body`` (``""`` if none), checked by the client's rule."""
    value = body.get(key)
    message = prompt_problem(kind, value, required=required)
    if message is not None:
        raise bad(message if key == "prompt" else f"{key}: {message}")
    return value if isinstance(value, str) else ""


def _check_model_rules(body: Mapping[str, Any], model: str) -> tuple[str, str]:
    """(resolution, duration) of a video body, checked against the model's row
    of the shared rule table; the model's defaults when left out."""
    rules = VIDEO_MODEL_RULES[model]
    resolution = _check_choice(body, "resolution", RESOLUTIONS, rules.resolutions[0])
    message = resolution_rule_problem(model, body.get("resolution"))
    if message is not None:
        raise bad(f"Invalid resolution: {message}")
    duration = body.get("duration")
    message = duration_rule_problem(model, duration)
    if message is not None:
        raise bad(f"Invalid duration: {message}")
    return resolution, duration if isinstance(duration, str) else rules.durations[0]


def _check_generation_type(body: Mapping[str, Any], kind: str, *, required: bool) -> None:
    value = body.get("generation_type")
    if value is None:
        if required:
            raise bad("generation_type is required")
        return
    if value != GENERATION_TYPES[kind]:
        raise bad("Unknown request type")


def _check_callback(body: Mapping[str, Any]) -> None:
    url = body.get("callback_url")
    if url is not None and not (_is_str(url) and url.startswith(("http://", "https://"))):
        raise bad("callback_url must be an http(s) URL")


def _completed_source(lookup: Lookup, gen_id: Any, what: str) -> SourceGeneration:
    if not isinstance(gen_id, str) or not gen_id:
        raise bad(f"{what}: a generation id is required")
    source = lookup(gen_id)
    if source is None:
        raise bad(f"{what}: generation {gen_id} not found")
    if source.state_now() != "completed":
        raise bad(f"{what}: generation {gen_id} is not completed")
    if source.media != "video":
        raise bad(f"{what}: generation {gen_id} is not a video")
    return source


def _check_keyframes(
    body: Mapping[str, Any], lookup: Lookup
) -> tuple[dict[str, str], SourceGeneration | None, list[str]]:
    """Frame name -> ``image`` / ``generation``, the first generation frame, image urls."""
    keyframes = body.get("keyframes")
    if keyframes is None:
        return {}, None, []
    if not isinstance(keyframes, Mapping):
        raise bad("keyframes must be an object")
    frames: dict[str, str] = {}
    urls: list[str] = []
    source: SourceGeneration | None = None
    for name in ("frame0", "frame1"):
        frame = keyframes.get(name)
        if frame is None:
            continue
        if not isinstance(frame, Mapping):
            raise bad(f"keyframes.{name} must be an object")
        kind = frame.get("type")
        if kind == "image":
            urls.append(_require_url(frame, f"keyframes.{name}"))
        elif kind == "generation":
            found = _completed_source(lookup, frame.get("id"), f"keyframes.{name}")
            source = source or found
        else:
            raise bad("Unknown request type")
        frames[name] = kind
    if not frames:
        raise bad("No keyframes provided")
    return frames, source, urls


def _check_loop(body: Mapping[str, Any], frames: Mapping[str, str]) -> None:
    loop = body.get("loop")
    if loop is None:
        return
    if not isinstance(loop, bool):
        raise bad("loop must be a boolean")
    message = loop_rule_problem(frames.get("frame0"), frames.get("frame1")) if loop else None
    if message is not None:
        raise bad(message)


def _check_concepts(body: Mapping[str, Any]) -> None:
    concepts = body.get("concepts")
    if concepts is None:
        return
    if not isinstance(concepts, list):
        raise bad("concepts must be a list")
    for i, concept in enumerate(concepts):
        key = concept.get("key") if isinstance(concept, Mapping) else None
        if not isinstance(key, str):
            raise bad(f"concepts[{i}].key is required")
        if key not in CONCEPTS:
            raise bad(f"Unknown concept {key!r}")


def _video(body: Mapping[str, Any], lookup: Lookup, default_model: str) -> CreateSpec:
    _check_generation_type(body, "video", required=False)
    model = _check_choice(body, "model", VIDEO_MODELS, default_model)
    frames, source, urls = _check_keyframes(body, lookup)
    prompt = _check_prompt(body, "video", required="image" not in frames.values())
    _check_loop(body, frames)
    _check_concepts(body)
    default_ratio = source.aspect_ratio if source is not None else "16:9"
    resolution, duration = _check_model_rules(body, model)
    return CreateSpec(
        kind="video",
        model=model,
        media="video",
        aspect_ratio=_check_choice(body, "aspect_ratio", ASPECT_RATIOS, default_ratio),
        resolution=resolution,
        duration=duration,
        prompt=prompt,
        input_urls=tuple(urls),
    )


def _refs(body: Mapping[str, Any], key: str) -> list[str]:
    refs = body.get(key)
    if refs is None:
        return []
    if not isinstance(refs, list):
        raise bad(f"{key} must be a list")
    if len(refs) > MAX_REFS:
        raise bad(f"{key}: at most {MAX_REFS} images are supported")
    urls = []
    for i, ref in enumerate(refs):
        urls.append(_require_url(ref, f"{key}[{i}]"))
        _check_weight(ref, f"{key}[{i}]")
    return urls


def _check_weight(ref: Mapping[str, Any], where: str) -> None:
    message = weight_rule_problem(ref.get("weight"))
    if message is not None:
        raise bad(f"{where}.weight {message}")


def _image(body: Mapping[str, Any]) -> CreateSpec:
    _check_generation_type(body, "image", required=False)
    model = _check_choice(body, "model", IMAGE_MODELS, "photon-1")
    prompt = _check_prompt(body, "image", required=True)
    urls = _refs(body, "image_ref") + _refs(body, "style_ref")
    character = body.get("character_ref")
    if character is not None:
        if not isinstance(character, Mapping) or not character:
            raise bad("character_ref must map identities to {images: [...]}")
        for name, identity in character.items():
            images = identity.get("images") if isinstance(identity, Mapping) else None
            if not isinstance(images, list) or not images or not all(map(_is_str, images)):
                raise bad(f"character_ref.{name}.images must be a non-empty list of URLs")
            if len(images) > MAX_REFS:
                raise bad(f"character_ref.{name}: at most {MAX_REFS} images are supported")
            urls.extend(images)
    if body.get("modify_image_ref") is not None:
        urls.append(_require_url(body["modify_image_ref"], "modify_image_ref"))
        _check_weight(body["modify_image_ref"], "modify_image_ref")
    sync, sync_timeout = body.get("sync"), body.get("sync_timeout")
    if sync is not None and not isinstance(sync, bool):
        raise bad("sync must be a boolean")
    if sync_timeout is not None and (
        isinstance(sync_timeout, bool)
        or not isinstance(sync_timeout, int | float)
        or not sync_timeout > 0
    ):
        raise bad("sync_timeout must be a positive number")
    return CreateSpec(
        kind="image",
        model=model,
        media="image",
        aspect_ratio=_check_choice(body, "aspect_ratio", ASPECT_RATIOS, "16:9"),
        image_format=_check_choice(body, "format", IMAGE_FORMATS, "jpg"),
        prompt=prompt,
        input_urls=tuple(urls),
    )


def _required(body: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if body.get(key) is None:
            raise bad(f"{key} is required")


def _media_edit(body: Mapping[str, Any], kind: str) -> CreateSpec:
    _required(body, "generation_type", "media", "model")
    _check_generation_type(body, kind, required=True)
    models = IMAGE_MODELS if kind == "reframe_image" else RAY_MODELS
    model = _check_choice(body, "model", models, models[0])
    urls = [_require_url(body["media"], "media")]
    if body.get("first_frame") is not None:
        urls.append(_require_url(body["first_frame"], "first_frame"))
    prompt = _check_prompt(body, kind)
    aspect_ratio = "16:9"
    if kind == "modify_video":
        _required(body, "mode")
        _check_choice(body, "mode", MODIFY_MODES, MODIFY_MODES[0])
    else:
        _required(body, "aspect_ratio")
        aspect_ratio = _check_choice(body, "aspect_ratio", ASPECT_RATIOS, "16:9")
        for key in REFRAME_INT_FIELDS:
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise bad(f"{key} must be an integer")
    return CreateSpec(
        kind=kind,
        model=model,
        media="image" if kind == "reframe_image" else "video",
        aspect_ratio=aspect_ratio,
        image_format=_check_choice(body, "format", IMAGE_FORMATS, "jpg"),
        prompt=prompt,
        input_urls=tuple(urls),
    )


def _derived(body: Mapping[str, Any], kind: str, source_id: str, lookup: Lookup) -> CreateSpec:
    _check_generation_type(body, kind, required=False)
    what = "Upscale" if kind == "upscale" else "Audio"
    source = _completed_source(lookup, source_id, what)
    resolution = source.spec.resolution
    prompt = ""
    if kind == "upscale":
        resolution = _check_choice(body, "resolution", RESOLUTIONS, "1080p")
    else:
        prompt = _check_prompt(body, kind)
        _check_prompt(body, kind, "negative_prompt")
    return CreateSpec(
        kind=kind,
        model=source.model,
        media="video",
        aspect_ratio=source.aspect_ratio,
        resolution=resolution,
        duration=source.spec.duration,
        prompt=prompt,
        source_id=source_id,
        audio=kind == "audio" or source.spec.audio,
    )


def validate_create(
    kind: str,
    body: Mapping[str, Any],
    lookup: Lookup,
    *,
    source_id: str | None = None,
    default_video_model: str = "ray-2",
) -> CreateSpec:
    """Check one create body; raise ``ApiError`` (400) with the service's message."""
    _check_callback(body)
    if kind == "video":
        return _video(body, lookup, default_video_model)
    if kind == "image":
        return _image(body)
    if kind in ("reframe_image", "reframe_video", "modify_video"):
        return _media_edit(body, kind)
    if kind in ("upscale", "audio") and source_id is not None:
        return _derived(body, kind, source_id, lookup)
    raise bad("Unknown request type")
