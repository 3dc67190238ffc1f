"""Typed models of the Dream Machine API: frozen attrs classes, no I/O.

Requests are what you send (one class per endpoint); responses are what comes
back. Construction never validates, so a request can be built field by field;
``request.validate()`` (or ``request_from_dict``) reports every problem at once.
Serialising (``to_body``) lives in ``_converter``: the one place that knows the
wire.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import attrs

__all__ = [
    "ASPECT_RATIOS",
    "IMAGE_FORMATS",
    "IMAGE_MODELS",
    "KINDS",
    "MODIFY_MODES",
    "RAY_MODELS",
    "REFRAME_INT_FIELDS",
    "REF_PREFIX",
    "RESOLUTIONS",
    "VIDEO_MODELS",
    "Assets",
    "AudioRequest",
    "CharacterIdentity",
    "CharacterRef",
    "Concept",
    "Credits",
    "Generation",
    "GenerationKeyframe",
    "GenerationPage",
    "GenerationState",
    "ImageKeyframe",
    "ImageRef",
    "ImageRequest",
    "Keyframe",
    "Keyframes",
    "Media",
    "ModifyVideoRequest",
    "Ping",
    "ReframeImageRequest",
    "ReframeVideoRequest",
    "UpscaleRequest",
    "VideoRequest",
    "quote_id",
]

KINDS = ("image", "video", "reframe_image", "reframe_video", "modify_video", "upscale", "audio")
IMAGE_MODELS = ("photon-1", "photon-flash-1")
VIDEO_MODELS = ("ray-2", "ray-flash-2", "ray-1-6")
RAY_MODELS = ("ray-2", "ray-flash-2")
"""Models that reframe and modify videos (no ray-1-6)."""
ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9", "9:21", "21:9")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
IMAGE_FORMATS = ("jpg", "png")
MODIFY_MODES = tuple(f"{m}_{n}" for m in ("adhere", "flex", "reimagine") for n in (1, 2, 3))

DEFAULT_IMAGE_MODEL = "photon-1"
DEFAULT_VIDEO_MODEL = "ray-2"


def quote_id(generation_id: str) -> str:
    """Percent-encode a generation id as one path segment, as the official SDK does.

    >>> quote_id("a/b c")
    'a%2Fb%20c'
    """
    if not generation_id:
        raise ValueError("generation id must be a non-empty string")
    quoted = quote(generation_id, safe="!$&'()*+,;=:@")
    if quoted in {".", ".."} or quoted.lower() in {"%2e", "%2e%2e", ".%2e", "%2e."}:
        raise ValueError(f"generation id {generation_id!r} is not a valid path segment")
    return quoted


# -- request parts ---------------------------------------------------------------------


def _url(value: str | os.PathLike[str]) -> str:
    """A media URL; a local path becomes its ``file://`` URL (uploaded before the
    create is sent: see ``lumasched.inputs``)."""
    if isinstance(value, os.PathLike):
        return Path(value).absolute().as_uri()
    return value


@attrs.frozen
class Media:
    """A media input (``media``, ``first_frame``): a URL the server can fetch, or a
    local ``Path`` (uploaded before the create is sent)."""

    url: str = attrs.field(converter=_url)


def _media(value: Media | str | os.PathLike[str]) -> Media:
    return value if isinstance(value, Media) else Media(_url(value))


def _opt_media(value: Media | str | os.PathLike[str] | None) -> Media | None:
    return None if value is None else _media(value)


@attrs.frozen
class ImageRef:
    """An image reference (a URL or a local ``Path``) with its influence ``weight`` (0..1)."""

    url: str = attrs.field(converter=_url)
    weight: float | None = None


def _str_tuple(value: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    return tuple(_url(v) for v in value)


@attrs.frozen
class CharacterIdentity:
    images: tuple[str, ...] = attrs.field(converter=_str_tuple)


@attrs.frozen
class CharacterRef:
    """``character_ref``: 1-4 images of one person (``identity0``).

    >>> CharacterRef.of("https://example.com/face.jpg").identity0.images
    ('https://example.com/face.jpg',)
    """

    identity0: CharacterIdentity

    @classmethod
    def of(cls, *images: str | os.PathLike[str]) -> CharacterRef:
        return cls(CharacterIdentity(images))


@attrs.frozen
class Concept:
    """A concept (camera move etc.) by key; see ``LumaClient.concepts()``."""

    key: str


@attrs.frozen
class ImageKeyframe:
    """A keyframe from an image URL (``{"type": "image", "url": ...}``) or a local ``Path``."""

    url: str = attrs.field(converter=_url)
    type: ClassVar[str] = "image"


@attrs.frozen
class GenerationKeyframe:
    """A keyframe from an earlier generation (``{"type": "generation", "id": ...}``)."""

    id: str
    type: ClassVar[str] = "generation"


Keyframe = ImageKeyframe | GenerationKeyframe


@attrs.frozen
class Keyframes:
    """Start (``frame0``) and end (``frame1``) frames of a video.

    frame0 generation = extend; frame1 generation = reverse extend; both
    generations = interpolate; images = image to video.
    """

    frame0: Keyframe | None = None
    frame1: Keyframe | None = None


def _opt_tuple_refs(value: Iterable[ImageRef] | None) -> tuple[ImageRef, ...] | None:
    return None if value is None else tuple(value)


def _opt_tuple_concepts(value: Iterable[Concept | str] | None) -> tuple[Concept, ...] | None:
    if value is None:
        return None
    return tuple(Concept(c) if isinstance(c, str) else c for c in value)


# -- requests --------------------------------------------------------------------------


class _Request:
    """Behaviour shared by every request class (mixed into attrs classes)."""

    __slots__ = ()

    kind: ClassVar[str]
    _required: ClassVar[tuple[str, ...]] = ()
    _generation_type: ClassVar[str | None] = None

    @property
    def path(self) -> str:
        raise NotImplementedError

    def to_body(self) -> dict[str, Any]:
        """The JSON body the official SDK sends for the same arguments."""
        from lumasched.api._converter import request_body

        return request_body(self)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise ``ValidationError`` listing every problem, or return ``None``."""
        from lumasched.api._validation import raise_for_problems

        raise_for_problems(self)  # type: ignore[arg-type]


@attrs.frozen
class ImageRequest(_Request):
    """``POST /generations/image``: text to image, with optional references.

    >>> ImageRequest("a cat", aspect_ratio="1:1").to_body()
    {'model': 'photon-1', 'aspect_ratio': '1:1', 'prompt': 'a cat'}
    """

    kind: ClassVar[str] = "image"
    _required: ClassVar[tuple[str, ...]] = ("model",)

    prompt: str | None = None
    model: str = attrs.field(default=DEFAULT_IMAGE_MODEL, kw_only=True)
    aspect_ratio: str | None = attrs.field(default=None, kw_only=True)
    format: str | None = attrs.field(default=None, kw_only=True)
    image_ref: tuple[ImageRef, ...] | None = attrs.field(
        default=None, kw_only=True, converter=_opt_tuple_refs
    )
    style_ref: tuple[ImageRef, ...] | None = attrs.field(
        default=None, kw_only=True, converter=_opt_tuple_refs
    )
    character_ref: CharacterRef | None = attrs.field(default=None, kw_only=True)
    modify_image_ref: ImageRef | None = attrs.field(default=None, kw_only=True)
    sync: bool | None = attrs.field(default=None, kw_only=True)
    sync_timeout: float | None = attrs.field(default=None, kw_only=True)
    generation_type: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    @property
    def path(self) -> str:
        return "/generations/image"


@attrs.frozen
class VideoRequest(_Request):
    """``POST /generations/video``: text or keyframes to video.

    >>> VideoRequest("a teddy bear", resolution="720p", duration="5s").to_body()
    {'model': 'ray-2', 'duration': '5s', 'prompt': 'a teddy bear', 'resolution': '720p'}
    """

    kind: ClassVar[str] = "video"
    _required: ClassVar[tuple[str, ...]] = ("model",)

    prompt: str | None = None
    model: str = attrs.field(default=DEFAULT_VIDEO_MODEL, kw_only=True)
    aspect_ratio: str | None = attrs.field(default=None, kw_only=True)
    resolution: str | None = attrs.field(default=None, kw_only=True)
    duration: str | None = attrs.field(default=None, kw_only=True)
    loop: bool | None = attrs.field(default=None, kw_only=True)
    keyframes: Keyframes | None = attrs.field(default=None, kw_only=True)
    concepts: tuple[Concept, ...] | None = attrs.field(
        default=None, kw_only=True, converter=_opt_tuple_concepts
    )
    generation_type: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    @property
    def path(self) -> str:
        return "/generations/video"


@attrs.frozen
class _Reframe(_Request):
    """Fields shared by both reframe requests (crop, grid position and resize in pixels)."""

    _required: ClassVar[tuple[str, ...]] = ("aspect_ratio", "generation_type", "media", "model")

    media: Media = attrs.field(converter=_media)
    aspect_ratio: str = attrs.field(kw_only=True)
    prompt: str | None = attrs.field(default=None, kw_only=True)
    grid_position_x: int | None = attrs.field(default=None, kw_only=True)
    grid_position_y: int | None = attrs.field(default=None, kw_only=True)
    x_start: int | None = attrs.field(default=None, kw_only=True)
    x_end: int | None = attrs.field(default=None, kw_only=True)
    y_start: int | None = attrs.field(default=None, kw_only=True)
    y_end: int | None = attrs.field(default=None, kw_only=True)
    resized_width: int | None = attrs.field(default=None, kw_only=True)
    resized_height: int | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)


REFRAME_INT_FIELDS = tuple(a.name for a in attrs.fields(_Reframe) if str(a.type) == "int | None")
"""The reframe requests' pixel fields (grid position, crop bounds, resize): integers."""


@attrs.frozen
class ReframeImageRequest(_Reframe):
    """``POST /generations/image/reframe``: extend an image to a new aspect ratio."""

    kind: ClassVar[str] = "reframe_image"
    _generation_type: ClassVar[str | None] = "reframe_image"

    model: str = attrs.field(default=DEFAULT_IMAGE_MODEL, kw_only=True)
    format: str | None = attrs.field(default=None, kw_only=True)

    @property
    def path(self) -> str:
        return "/generations/image/reframe"


@attrs.frozen
class ReframeVideoRequest(_Reframe):
    """``POST /generations/video/reframe``: extend a video to a new aspect ratio."""

    kind: ClassVar[str] = "reframe_video"
    _generation_type: ClassVar[str | None] = "reframe_video"

    model: str = attrs.field(default=DEFAULT_VIDEO_MODEL, kw_only=True)
    first_frame: Media | None = attrs.field(default=None, kw_only=True, converter=_opt_media)

    @property
    def path(self) -> str:
        return "/generations/video/reframe"


@attrs.frozen
class ModifyVideoRequest(_Request):
    """``POST /generations/video/modify``: restyle a video (``mode`` adhere/flex/reimagine)."""

    kind: ClassVar[str] = "modify_video"
    _required: ClassVar[tuple[str, ...]] = ("generation_type", "media", "mode", "model")
    _generation_type: ClassVar[str | None] = "modify_video"

    media: Media = attrs.field(converter=_media)
    mode: str = attrs.field(kw_only=True)
    model: str = attrs.field(default=DEFAULT_VIDEO_MODEL, kw_only=True)
    first_frame: Media | None = attrs.field(default=None, kw_only=True, converter=_opt_media)
    prompt: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    @property
    def path(self) -> str:
        return "/generations/video/modify"


@attrs.frozen
class _OnGeneration(_Request):
    """A create that works on an existing generation: ``POST /generations/{id}/<action>``."""

    _action: ClassVar[str]

    generation_id: str

    @property
    def model(self) -> None:
        return None

    @property
    def path(self) -> str:
        return f"/generations/{quote_id(self.generation_id)}/{self._action}"


@attrs.frozen
class UpscaleRequest(_OnGeneration):
    """``POST /generations/{id}/upscale``: upscale an existing video generation."""

    kind: ClassVar[str] = "upscale"
    _generation_type: ClassVar[str | None] = "upscale_video"
    _action: ClassVar[str] = "upscale"

    resolution: str | None = None
    callback_url: str | None = None


@attrs.frozen
class AudioRequest(_OnGeneration):
    """``POST /generations/{id}/audio``: add sound to an existing video generation."""

    kind: ClassVar[str] = "audio"
    _generation_type: ClassVar[str | None] = "add_audio"
    _action: ClassVar[str] = "audio"

    prompt: str | None = None
    negative_prompt: str | None = None
    callback_url: str | None = None


CreateRequest = (
    ImageRequest
    | VideoRequest
    | ReframeImageRequest
    | ReframeVideoRequest
    | ModifyVideoRequest
    | UpscaleRequest
    | AudioRequest
)

REQUEST_CLASSES: dict[str, type[CreateRequest]] = {
    cls.kind: cls
    for cls in (
        ImageRequest,
        VideoRequest,
        ReframeImageRequest,
        ReframeVideoRequest,
        ModifyVideoRequest,
        UpscaleRequest,
        AudioRequest,
    )
}


REF_PREFIX = "job:"
"""Prefix of the placeholder generation id that stands for another job's generation
(``job:<key>``): the one placeholder, in a manifest's items as in the scheduler's
requests; the scheduler puts the real id in its place before the create is sent."""


def generation_refs(request: CreateRequest) -> list[str]:
    """The generation ids a request depends on (keyframes, or the upscale/audio source)."""
    if isinstance(request, UpscaleRequest | AudioRequest):
        return [request.generation_id]
    if isinstance(request, VideoRequest) and request.keyframes is not None:
        frames = (request.keyframes.frame0, request.keyframes.frame1)
        return [f.id for f in frames if isinstance(f, GenerationKeyframe)]
    return []


def replace_generation_refs(request: CreateRequest, fn: Callable[[str], str]) -> CreateRequest:
    """A copy of ``request`` with every generation id it depends on mapped through ``fn``."""
    if isinstance(request, UpscaleRequest | AudioRequest):
        return attrs.evolve(request, generation_id=fn(request.generation_id))
    if isinstance(request, VideoRequest) and request.keyframes is not None:

        def swap(frame: Keyframe | None) -> Keyframe | None:
            if isinstance(frame, GenerationKeyframe):
                return GenerationKeyframe(fn(frame.id))
            return frame

        keyframes = Keyframes(swap(request.keyframes.frame0), swap(request.keyframes.frame1))
        return attrs.evolve(request, keyframes=keyframes)
    return request


# -- responses -------------------------------------------------------------------------


class GenerationState(enum.StrEnum):
    """Documented states. Unknown states from a newer server are kept as plain ``str``."""

    QUEUED = "queued"
    DREAMING = "dreaming"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATES = frozenset({GenerationState.COMPLETED, GenerationState.FAILED})


@attrs.frozen
class Assets:
    """Asset URLs of a generation (hosted off the API host; fetch without the API key)."""

    video: str | None = None
    image: str | None = None
    progress_video: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class Generation:
    """A generation as the server reports it. Unknown fields are kept in ``extra``."""

    id: str
    state: str = GenerationState.QUEUED
    failure_reason: str | None = None
    created_at: datetime | None = None
    generation_type: str | None = None
    model: str | None = None
    assets: Assets | None = None
    request: dict[str, Any] | None = attrs.field(default=None, repr=False)
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def is_terminal(self) -> bool:
        """``completed`` or ``failed``: the state will not change again."""
        return self.state in TERMINAL_STATES

    @property
    def asset_url(self) -> str | None:
        """The main asset: the video if there is one, else the image."""
        if self.assets is None:
            return None
        return self.assets.video or self.assets.image

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Generation:
        """Parse a server response (tolerant of new fields and states)."""
        from lumasched.api._converter import structure_generation

        return structure_generation(data)

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict ``from_json`` reads back to an equal ``Generation``."""
        from lumasched.api._converter import unstructure_generation

        return unstructure_generation(self)


@attrs.frozen
class GenerationPage:
    """One page of ``GET /generations``."""

    generations: tuple[Generation, ...]
    count: int
    has_more: bool = False
    limit: int | None = None
    offset: int | None = None


@attrs.frozen
class Credits:
    """The account balance, in USD cents."""

    credit_balance: float


@attrs.frozen
class Ping:
    message: str | None = None
