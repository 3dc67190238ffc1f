"""Real asset files: JPEG/PNG images drawn with Pillow, MP4 videos from packaged segments.

A video has the shape its request asked for: the frame size of its aspect
ratio and resolution (scaled down, ``_mp4.clip_size``), 24 frames per second
of its duration, and an AAC track after ``add_audio``. It is built from a
pre-rendered one-second H.264 segment for that frame size (made by
``scripts/make_emulator_assets.py``), cached per shape, and followed by an MP4
``free`` box holding the generation id and optional zero padding. Players
skip ``free`` boxes, so the file stays valid while each generation's bytes
(and sha256) differ and its size can be set at will. The padding is produced
on the fly, never held in memory.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import struct
from collections.abc import Iterator
from importlib import resources

import attrs
from PIL import Image, ImageDraw

from lumasched.emulator._mp4 import Track, build_mp4, clip_size, read_track

__all__ = [
    "AUDIO_FILE",
    "REFRAME_SIZES",
    "AssetSigner",
    "VideoFile",
    "VideoShape",
    "image_size",
    "parse_range",
    "render_image",
    "video_bytes",
    "video_clip_name",
]

REFRAME_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1536, 1536),
    "4:3": (1792, 1344),
    "3:4": (1344, 1792),
    "16:9": (2048, 1152),
    "9:16": (1152, 2048),
    "21:9": (2432, 1024),
    "9:21": (1024, 2432),
}
"""The docs' target sizes per aspect ratio."""

AUDIO_FILE = "audio.m4a"
_ZEROS = bytes(64 * 1024)


@attrs.frozen
class VideoShape:
    """What a generation's video looks like; one cached MP4 per shape."""

    aspect_ratio: str = "16:9"
    resolution: str = "720p"
    seconds: int = 5
    audio: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return clip_size(self.resolution, self.aspect_ratio)


def video_clip_name(resolution: str, aspect_ratio: str) -> str:
    width, height = clip_size(resolution, aspect_ratio)
    return f"video_{width}x{height}.mp4"


def _packaged(name: str) -> bytes:
    return resources.files("lumasched.emulator").joinpath("assets", name).read_bytes()


@functools.lru_cache(maxsize=64)
def video_bytes(shape: VideoShape) -> bytes:
    """The MP4 of a shape (cached: a batch of alike generations builds it once)."""
    video = _segment(shape.resolution, shape.aspect_ratio)
    audio = _audio() if shape.audio else None
    return build_mp4(video, shape.size, shape.seconds, audio)


@functools.cache
def _segment(resolution: str, aspect_ratio: str) -> Track:
    return read_track(_packaged(video_clip_name(resolution, aspect_ratio)))


@functools.cache
def _audio() -> Track:
    return read_track(_packaged(AUDIO_FILE))


def image_size(aspect_ratio: str, scale: float) -> tuple[int, int]:
    width, height = REFRAME_SIZES[aspect_ratio]
    return max(1, round(width * scale)), max(1, round(height * scale))


@functools.lru_cache(maxsize=512)
def render_image(
    gen_id: str,
    aspect_ratio: str,
    image_format: str,
    scale: float,
    size: tuple[int, int] | None = None,
) -> bytes:
    """A picture unique to ``gen_id``: a background colour and a strip of
    squares taken from the id's hash. ``size`` overrides the reframe-table size
    (a video's thumbnail is its frame size)."""
    digest = hashlib.sha256(gen_id.encode()).digest()
    size = size or image_size(aspect_ratio, scale)
    image = Image.new("RGB", size, (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    cell = max(2, size[0] // 16)
    for i in range(8):
        colour = (digest[3 + 3 * i], digest[4 + 3 * i], digest[5 + 3 * i])
        x = i * cell * 2 % max(1, size[0] - cell)
        draw.rectangle((x, size[1] // 3, x + cell, size[1] // 3 + cell), fill=colour)
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=85)
    return out.getvalue()


@attrs.frozen
class VideoFile:
    """A generation's MP4: clip + ``free`` box (marker, then ``padding`` zero bytes)."""

    clip: bytes
    marker: bytes
    padding: int

    @classmethod
    def for_generation(cls, gen_id: str, shape: VideoShape, padding: int) -> VideoFile:
        marker = f"lumasched-emulator generation {gen_id}\n".encode()
        return cls(video_bytes(shape), marker, padding)

    @property
    def _box_header(self) -> bytes:
        size = 8 + len(self.marker) + self.padding
        if size <= 0xFFFFFFFF:
            return struct.pack(">I4s", size, b"free")
        return struct.pack(">I4sQ", 1, b"free", size + 8)

    @property
    def size(self) -> int:
        return len(self.clip) + len(self._box_header) + len(self.marker) + self.padding

    def iter_range(self, start: int, end: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the file, in chunks of at most ``chunk``."""
        head = self.clip + self._box_header + self.marker
        pos = start
        while pos < end:
            if pos < len(head):
                piece = head[pos : min(end, len(head), pos + chunk)]
            else:
                piece = _ZEROS[: min(end - pos, chunk, len(_ZEROS))]
            pos += len(piece)
            yield piece


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` for a single ``bytes=`` range; None when it cannot be
    satisfied. Raises ``ValueError`` for a header to ignore (malformed, multi-range)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise ValueError(header)
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise ValueError(header)
    if not first:
        if not last.isdigit():
            raise ValueError(header)
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size
    if not first.isdigit() or (last and not last.isdigit()):
        raise ValueError(header)
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        raise ValueError(header)
    if start >= size:
        return None
    return start, end


class AssetSigner:
    """HMAC-signed asset URLs that can expire."""

    def __init__(self, secret: bytes):
        self._secret = secret

    @property
    def secret(self) -> bytes:
        return self._secret

    def _sig(self, path: str, iat: int, exp: int | None) -> str:
        message = f"{path}|{iat}|{exp}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def query(self, path: str, now: float, ttl: float | None) -> str:
        iat = int(now * 1000)
        exp = None if ttl is None else int((now + ttl) * 1000)
        query = f"iat={iat}" + ("" if exp is None else f"&exp={exp}")
        return f"{query}&sig={self._sig(path, iat, exp)}"

    def check(self, path: str, params: dict[str, str]) -> tuple[int, int | None] | None:
        """(issued-at ms, expires-at ms) of a well-signed URL, else None."""
        try:
            iat = int(params["iat"])
            exp = int(params["exp"]) if "exp" in params else None
        except (KeyError, ValueError):
            return None
        if not hmac.compare_digest(params.get("sig", ""), self._sig(path, iat, exp)):
            return None
        return iat, exp
