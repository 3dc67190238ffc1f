"""Is a local file a usable input? Checked before anything is sent or uploaded.

Images are opened with Pillow (format, size, a decodable header); videos are
recognised by their container signature (MP4/MOV ``ftyp``, WebM/Matroska EBML)
without decoding, so a batch of large clips is checked in milliseconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import attrs

from lumasched._config import MAX_INPUT_IMAGE_BYTES, MAX_INPUT_IMAGE_PIXELS, MAX_INPUT_VIDEO_BYTES
from lumasched.api._inputs import MediaKind

__all__ = ["InputFile", "InputProblem", "check_input"]

# Pillow's format name / container -> (Content-Type, the stored object's extension)
IMAGE_TYPES = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "WEBP": ("image/webp", ".webp"),
}
VIDEO_TYPES = {
    "mp4": ("video/mp4", ".mp4"),
    "mov": ("video/quicktime", ".mov"),
    "webm": ("video/webm", ".webm"),
}


class InputProblem(ValueError):
    """Why a file cannot be an input (the message names no path: the caller's
    ``FILE:LINE: field:`` says where)."""


@attrs.frozen
class InputFile:
    """A checked input file."""

    path: Path
    size: int
    mtime_ns: int
    media: MediaKind
    content_type: str
    suffix: str
    """The extension the stored object gets (``.jpg``, ``.mp4``, ...)."""


def _sniff_video(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return "mov" if head[8:10] == b"qt" else "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def _looks_like_image(head: bytes) -> bool:
    return (
        head[:3] == b"\xff\xd8\xff"
        or head[:8] == b"\x89PNG\r\n\x1a\n"
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    )


def _mb(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


def check_input(path: Path, expect: MediaKind) -> InputFile:
    """``path`` as an input where the API expects ``expect``; :class:`InputProblem` if not."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InputProblem(f"no such file: {path}") from None
    except OSError as exc:
        raise InputProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise InputProblem(f"not a regular file: {path}")
    if stat.st_size == 0:
        raise InputProblem(f"empty file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise InputProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    if expect == "video":
        container = _sniff_video(head)
        if container is None:
            what = "an image" if _looks_like_image(head) else "not a video"
            raise InputProblem(f"{path} is {what}: a video (MP4, MOV or WebM) is expected here")
        if stat.st_size > MAX_INPUT_VIDEO_BYTES:
            raise InputProblem(
                f"{path} is {_mb(stat.st_size)}: videos up to {_mb(MAX_INPUT_VIDEO_BYTES)}"
            )
        content_type, suffix = VIDEO_TYPES[container]
        return InputFile(path, stat.st_size, stat.st_mtime_ns, "video", content_type, suffix)
    if _sniff_video(head) is not None:
        raise InputProblem(f"{path} is a video: an image (JPEG, PNG or WebP) is expected here")
    if stat.st_size > MAX_INPUT_IMAGE_BYTES:
        raise InputProblem(
            f"{path} is {_mb(stat.st_size)}: images up to {_mb(MAX_INPUT_IMAGE_BYTES)}"
        )
    # Imported here: Pillow costs every `lumasched run` 15 ms of start-up, and only a
    # manifest naming local images needs it.
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                fmt = image.format or "?"
                width, height = image.size
                image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputProblem(f"{path} is not an image (JPEG, PNG or WebP expected)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputProblem(f"{path} is a damaged image: {exc}") from None
    kinds = IMAGE_TYPES.get(fmt)
    if kinds is None:
        raise InputProblem(f"{path} is a {fmt} image: use JPEG, PNG or WebP")
    if width * height > MAX_INPUT_IMAGE_PIXELS:
        raise InputProblem(f"{path} is {width}x{height}: at most {MAX_INPUT_IMAGE_PIXELS:,} pixels")
    return InputFile(path, stat.st_size, stat.st_mtime_ns, "image", *kinds)
