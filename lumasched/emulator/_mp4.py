"""Build MP4 files of any length from pre-rendered one-second segments (no encoder).

Each packaged segment (``scripts/make_emulator_assets.py``) is one closed GOP:
an IDR frame and P frames, no B frames, so a decoder takes the same segment
played N times back to back as a valid N-second stream. An AAC track is added
the same way, its frames taken in turn from a packaged two-second tone. This
module reads the samples and sample description out of those files and writes
a new ``ftyp`` + ``moov`` + ``mdat``: a few microseconds of work per shape,
with nothing but the standard library.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

import attrs

from lumasched.pricing import video_dimensions

__all__ = ["FPS", "SAMPLE_RATE", "Track", "build_mp4", "clip_size", "read_track"]

FPS = 24
SAMPLE_RATE = 48_000
CLIP_DIVISOR = 8
"""Frames are the real size divided by this (720p 16:9: 160x90)."""

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_MOVIE_TIMESCALE = 1000


def clip_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """The emulator's frame size: the real one over ``CLIP_DIVISOR``, even numbers."""
    width, height = video_dimensions(resolution, aspect_ratio)
    half = 2 * CLIP_DIVISOR
    return max(2, 2 * round(width / half)), max(2, 2 * round(height / half))


@attrs.frozen
class Track:
    """One track of a packaged file: what ``build_mp4`` needs to write it again."""

    sample_description: bytes
    """The whole ``stsd`` box, copied unchanged (codec configuration inside)."""
    samples: tuple[bytes, ...]
    sync: frozenset[int]
    """0-based indices of key frames (empty: every sample is one)."""
    timescale: int
    sample_delta: int


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) for each box in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError(f"bad MP4 box size {size} at {pos}")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, path: tuple[bytes, ...]) -> tuple[int, int]:
    """(payload start, end) of the first box along ``path`` below ``[start, end)``."""
    for name in path:
        for kind, payload, box_end in _boxes(data, start, end):
            if kind == name:
                start, end = payload, box_end
                break
        else:
            raise ValueError(f"no {name.decode()} box")
    return start, end


def _table(data: bytes, start: int, fmt: str, skip: int = 4) -> list[tuple[int, ...]]:
    """Entries of a full box's table: version/flags (and ``skip`` - 4 more bytes), count, rows."""
    (count,) = struct.unpack_from(">I", data, start + skip)
    size = struct.calcsize(">" + fmt)
    return [struct.unpack_from(">" + fmt, data, start + skip + 4 + i * size) for i in range(count)]


def read_track(data: bytes) -> Track:
    """The first track of an MP4 file (sample tables with any chunk layout)."""
    trak = _child(data, 0, len(data), (b"moov", b"trak"))
    mdhd = _child(data, *trak, (b"mdia", b"mdhd"))
    version = data[mdhd[0]]
    (timescale,) = struct.unpack_from(">I", data, mdhd[0] + (20 if version == 1 else 12))
    stbl = _child(data, *trak, (b"mdia", b"minf", b"stbl"))
    boxes = {kind: (payload, end) for kind, payload, end in _boxes(data, *stbl)}
    stsd_start, stsd_end = boxes[b"stsd"]
    description = data[stsd_start - 8 : stsd_end]
    (fixed, count) = struct.unpack_from(">II", data, boxes[b"stsz"][0] + 4)
    sizes = (
        [fixed] * count if fixed else [r[0] for r in _table(data, boxes[b"stsz"][0], "I", skip=8)]
    )
    if b"stco" in boxes:
        offsets = [r[0] for r in _table(data, boxes[b"stco"][0], "I")]
    else:
        offsets = [r[0] for r in _table(data, boxes[b"co64"][0], "Q")]
    runs = _table(data, boxes[b"stsc"][0], "III")
    samples: list[bytes] = []
    for index, chunk_offset in enumerate(offsets, start=1):
        per_chunk = next(r[1] for r in reversed(runs) if r[0] <= index)
        pos = chunk_offset
        for size in sizes[len(samples) : len(samples) + per_chunk]:
            samples.append(data[pos : pos + size])
            pos += size
    sync = (
        frozenset(r[0] - 1 for r in _table(data, boxes[b"stss"][0], "I"))
        if b"stss" in boxes
        else frozenset()
    )
    delta = _table(data, boxes[b"stts"][0], "II")[0][1]
    return Track(description, tuple(samples), sync, timescale, delta)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", flags), *payload)


def _trak(
    track_id: int,
    track: Track,
    count: int,
    offset: int,
    size: tuple[int, int] | None,
) -> bytes:
    """A ``trak`` for ``count`` samples taken in turn from ``track``, stored as one chunk."""
    duration = count * track.sample_delta
    movie_duration = duration * _MOVIE_TIMESCALE // track.timescale
    width, height = size or (0, 0)
    tkhd = _full(
        b"tkhd",
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, track_id, 0, movie_duration),
        bytes(8),
        struct.pack(">hhhh", 0, 0, 0 if size else 0x0100, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full(b"mdhd", 0, struct.pack(">IIIIHH", 0, 0, track.timescale, duration, 0x55C4, 0))
    handler, name = (b"vide", b"VideoHandler\0") if size else (b"soun", b"SoundHandler\0")
    hdlr = _full(b"hdlr", 0, bytes(4), handler, bytes(12), name)
    header = _full(b"vmhd", 1, bytes(8)) if size else _full(b"smhd", 0, bytes(4))
    dinf = _box(b"dinf", _full(b"dref", 0, struct.pack(">I", 1), _full(b"url ", 1)))
    n = len(track.samples)
    sizes = struct.pack(f">{count}I", *(len(track.samples[i % n]) for i in range(count)))
    tables = [
        track.sample_description,
        _full(b"stts", 0, struct.pack(">III", 1, count, track.sample_delta)),
    ]
    if track.sync:
        keys = [i + 1 for i in range(count) if i % n in track.sync]
        tables.append(_full(b"stss", 0, struct.pack(f">I{len(keys)}I", len(keys), *keys)))
    tables += [
        _full(b"stsc", 0, struct.pack(">IIII", 1, 1, count, 1)),
        _full(b"stsz", 0, struct.pack(">II", 0, count), sizes),
        _full(b"stco", 0, struct.pack(">II", 1, offset)),
    ]
    stbl = _box(b"stbl", *tables)
    return _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, _box(b"minf", header, dinf, stbl)))


def _payload(track: Track, count: int) -> bytes:
    n = len(track.samples)
    return b"".join(track.samples[i % n] for i in range(count))


def build_mp4(
    video: Track, size: tuple[int, int], seconds: int, audio: Track | None = None
) -> bytes:
    """An MP4 of ``seconds`` x ``FPS`` frames of ``video`` (a ``size`` frame), with an
    ``audio`` track of the same length when given."""
    frames = seconds * FPS
    audio_count = 0 if audio is None else math.ceil(seconds * audio.timescale / audio.sample_delta)
    video_data = _payload(video, frames)
    audio_data = b"" if audio is None else _payload(audio, audio_count)
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")

    def moov(mdat_start: int) -> bytes:
        traks = [_trak(1, video, frames, mdat_start, size)]
        if audio is not None:
            traks.append(_trak(2, audio, audio_count, mdat_start + len(video_data), None))
        mvhd = _full(
            b"mvhd",
            0,
            struct.pack(">IIII", 0, 0, _MOVIE_TIMESCALE, seconds * _MOVIE_TIMESCALE),
            struct.pack(">IH", 0x10000, 0x0100),
            bytes(10),
            _MATRIX,
            bytes(24),
            struct.pack(">I", len(traks) + 1),
        )
        return _box(b"moov", mvhd, *traks)

    # stco offsets are fixed-width: the moov's size does not depend on them.
    mdat_start = len(ftyp) + len(moov(0)) + 8
    return ftyp + moov(mdat_start) + _box(b"mdat", video_data, audio_data)
