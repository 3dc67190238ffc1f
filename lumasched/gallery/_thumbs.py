"""Small pictures for the page: image thumbnails (Pillow) and video poster frames
(PyAV, the ``gallery`` extra; without it the page asks the browser for the
video's first frame instead).

They live in ``DIR/.gallery/`` and are made again only when their source is
newer, so regenerating the page of a 1,000-item run costs almost nothing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import io
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from lumasched.gallery._collect import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = ["THUMBS_DIR", "Thumbnailer", "inline_thumbnail"]

logger = logging.getLogger("lumasched.gallery")

THUMBS_DIR = ".gallery"
THUMB_SIZE = (480, 480)
_QUALITY = 80


class Thumbnailer:
    """Makes (or reuses) the thumbnail of an image and the poster of a video."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / THUMBS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._root = os.path.abspath(out_dir)
        self.posters_available = _have_av()

    def prepare(self, images: Iterable[Path], videos: Iterable[Path]) -> None:
        """Make every missing thumbnail and poster now, on a few threads (decoding
        and encoding release the GIL), so the page is written from the cache."""
        jobs = [(p, "thumb", _make_thumbnail) for p in images]
        if self.posters_available:
            jobs += [(p, "poster", _make_poster) for p in videos]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for _ in pool.map(lambda job: self._cached(*job), jobs):
                pass

    def prepare_one(self, source: Path) -> None:
        """Make ``source``'s thumbnail (an image) or poster (a video) now, if it has
        none yet: ``lumasched run`` makes them as files arrive, off its critical path."""
        suffix = source.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            self.thumbnail(source)
        elif suffix in VIDEO_SUFFIXES:
            self.poster(source)

    def thumbnail(self, source: Path) -> Path | None:
        """A JPEG at most ``THUMB_SIZE`` of ``source``, or None if it cannot be read."""
        return self._cached(source, "thumb", _make_thumbnail)

    def poster(self, source: Path) -> Path | None:
        """A JPEG of the video's first frame, or None (no PyAV, or unreadable)."""
        if not self.posters_available:
            return None
        return self._cached(source, "poster", _make_poster)

    def _cached(
        self, source: Path, what: str, make: Callable[[Path], Image.Image | None]
    ) -> Path | None:
        # The name hashes the source's path, so two items never share a file; its
        # path within the folder, so that the run (which names files one way) and
        # the page (another: relative or absolute) find the same picture, and a
        # moved folder keeps its pictures.
        where = os.path.abspath(source)
        with contextlib.suppress(ValueError):  # another drive (Windows): keep it whole
            where = os.path.relpath(where, self._root)
        digest = hashlib.sha256(where.encode()).hexdigest()[:16]
        target = self.dir / f"{source.stem[:40]}-{digest}.{what}.jpg"
        try:
            if target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
                return target
        except OSError:
            pass
        part = target.with_name(target.name + ".part")
        try:
            image = make(source)
            if image is None:
                return None
            image.thumbnail(THUMB_SIZE)
            # No optimize=True: its second pass made a small poster 4x dearer (4.2
            # against 1.0 ms, paid by `lumasched run` per file) for 30% fewer bytes.
            image.convert("RGB").save(part, "JPEG", quality=_QUALITY)
            os.replace(part, target)
        except Exception as exc:  # a truncated or foreign file: shown without a picture
            logger.warning("gallery: no %s for %s: %s", what, source.name, exc)
            with contextlib.suppress(OSError):
                part.unlink()
            return None
        return target


def inline_thumbnail(source: Path, *, size: int = 240) -> str | None:
    """A small JPEG of an image (or a video's first frame, with PyAV) as a
    ``data:`` URI, or None: what a page can show without asking for a file."""
    suffix = source.suffix.lower()
    try:
        if suffix in (".mp4", ".mov", ".webm"):
            image = _make_poster(source) if _have_av() else None
        else:
            image = _make_thumbnail(source)
        if image is None:
            return None
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=70)
    except Exception as exc:  # unreadable: shown without a picture
        logger.debug("no inline thumbnail for %s: %s", source.name, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _make_thumbnail(source: Path) -> Image.Image | None:
    with Image.open(source) as image:
        image.draft("RGB", THUMB_SIZE)  # JPEG: decode at a reduced scale, much faster
        return image.copy()


def _make_poster(source: Path) -> Image.Image | None:
    import av

    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            picture: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
            return picture
    return None


def _have_av() -> bool:
    # Found, not imported: importing PyAV costs about 0.1 s, paid only when a video
    # needs its poster (an install too broken to import fails there, per video).
    return importlib.util.find_spec("av") is not None
