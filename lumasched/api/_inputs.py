"""Local files where a request takes a media URL: how they are written, found and
swapped for real URLs.

A request names a local file with a ``file://`` URL (``Path.as_uri()``); the
models' URL fields also take a ``pathlib.Path`` and turn it into one. The URL
is what the journal keeps, so the request (and its digest) is the same on every
run; only the copy sent to the server carries the uploaded file's URL
(``replace_media_urls``), resolved just before the create.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import attrs

from lumasched.api._models import (
    CharacterIdentity,
    CharacterRef,
    CreateRequest,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframe,
    Keyframes,
    Media,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    VideoRequest,
)

__all__ = [
    "EMULATOR_UPLOADS_PATH",
    "MediaKind",
    "MediaSlot",
    "is_local",
    "local_path",
    "local_url",
    "media_slots",
    "replace_media_urls",
]

MediaKind = Literal["image", "video"]

EMULATOR_UPLOADS_PATH = "/_emulator/uploads/"
"""The emulator's store for local inputs: PUT with its key; GET and HEAD for
anyone, like a CDN (``lumasched.inputs.EmulatorTarget`` writes it)."""


def local_url(path: str | os.PathLike[str]) -> str:
    """The ``file://`` URL that names ``path`` (made absolute) in a request."""
    return Path(path).absolute().as_uri()


def is_local(url: str) -> bool:
    """Does this media URL name a local file?"""
    return url[:7].lower() == "file://"


def local_path(url: str) -> Path:
    """The file a ``file://`` URL names."""
    return Path(unquote(urlsplit(url).path))


@attrs.frozen
class MediaSlot:
    """One media URL of a request: where it is (``field``, as in manifest errors),
    the URL, and whether the API expects an image or a video there."""

    field: str
    url: str
    expect: MediaKind


def media_slots(request: CreateRequest) -> Iterator[MediaSlot]:
    """Every media URL of ``request``, in field order."""
    if isinstance(request, ImageRequest):
        for name in ("image_ref", "style_ref"):
            refs: tuple[ImageRef, ...] | None = getattr(request, name)
            for i, ref in enumerate(refs or ()):
                yield MediaSlot(f"{name}[{i}].url", ref.url, "image")
        if request.character_ref is not None:
            for i, url in enumerate(request.character_ref.identity0.images):
                yield MediaSlot(f"character_ref.identity0.images[{i}]", url, "image")
        if request.modify_image_ref is not None:
            yield MediaSlot("modify_image_ref.url", request.modify_image_ref.url, "image")
    elif isinstance(request, VideoRequest):
        if request.keyframes is not None:
            for name in ("frame0", "frame1"):
                frame = getattr(request.keyframes, name)
                if isinstance(frame, ImageKeyframe):
                    yield MediaSlot(f"keyframes.{name}.url", frame.url, "image")
    elif isinstance(request, ReframeImageRequest):
        yield MediaSlot("media.url", request.media.url, "image")
    elif isinstance(request, ReframeVideoRequest | ModifyVideoRequest):
        yield MediaSlot("media.url", request.media.url, "video")
        if request.first_frame is not None:
            yield MediaSlot("first_frame.url", request.first_frame.url, "image")


def replace_media_urls(request: CreateRequest, fn: Callable[[str], str]) -> CreateRequest:
    """A copy of ``request`` with every media URL mapped through ``fn``."""
    if isinstance(request, ImageRequest):

        def refs(values: tuple[ImageRef, ...] | None) -> tuple[ImageRef, ...] | None:
            if values is None:
                return None
            return tuple(attrs.evolve(ref, url=fn(ref.url)) for ref in values)

        character = request.character_ref
        if character is not None:
            images = tuple(fn(url) for url in character.identity0.images)
            character = CharacterRef(CharacterIdentity(images))
        modify = request.modify_image_ref
        return attrs.evolve(
            request,
            image_ref=refs(request.image_ref),
            style_ref=refs(request.style_ref),
            character_ref=character,
            modify_image_ref=None if modify is None else attrs.evolve(modify, url=fn(modify.url)),
        )
    if isinstance(request, VideoRequest):
        if request.keyframes is None:
            return request

        def frame(value: Keyframe | None) -> Keyframe | None:
            return ImageKeyframe(fn(value.url)) if isinstance(value, ImageKeyframe) else value

        keyframes = Keyframes(frame(request.keyframes.frame0), frame(request.keyframes.frame1))
        return attrs.evolve(request, keyframes=keyframes)
    if isinstance(request, ReframeImageRequest):
        return attrs.evolve(request, media=Media(fn(request.media.url)))
    if isinstance(request, ReframeVideoRequest | ModifyVideoRequest):
        first = request.first_frame
        return attrs.evolve(
            request,
            media=Media(fn(request.media.url)),
            first_frame=None if first is None else Media(fn(first.url)),
        )
    return request
