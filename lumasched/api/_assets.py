"""Streaming GET of asset URLs (videos, images) for ``downloads.py`` to build on."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp

from lumasched.api._transport import error_for_status, translate_errors

__all__ = ["AssetStream", "open_stream", "parse_content_range"]

DEFAULT_CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``(first, last, total)`` from ``Content-Range: bytes first-last/total``."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]), total


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.isdigit() else None


class AssetStream:
    """An open asset response. Read it with ``iter_chunks``; it closes with its context."""

    def __init__(
        self, url: str, response: aiohttp.ClientResponse, on_bytes: Callable[[int], None]
    ) -> None:
        self.url = url
        self._response = response
        self._on_bytes = on_bytes
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.content_length: int | None = _int_header(response.headers, "Content-Length")
        """Bytes in this response (``None`` when not announced)."""
        self.content_range = parse_content_range(response.headers.get("Content-Range"))
        self.total_size: int | None = self._total_size()
        """Size of the whole file, from Content-Range, or Content-Length on a 200."""

    def _total_size(self) -> int | None:
        if self.content_range is not None:
            return self.content_range[2]
        if self.status == 416:
            unsatisfied = re.fullmatch(r"bytes\s+\*/(\d+)", self.headers.get("Content-Range", ""))
            return int(unsatisfied[1]) if unsatisfied else None
        return self.content_length if self.status == 200 else None

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    def __repr__(self) -> str:
        return f"<AssetStream {self.status} {self.url}>"

    async def iter_chunks(self, size: int = DEFAULT_CHUNK) -> AsyncIterator[bytes]:
        """The body in chunks of at most ``size`` bytes; transport failures raise
        ``TransportError`` (a truncated body included)."""
        with translate_errors("GET", self.url):
            async for chunk in self._response.content.iter_chunked(size):
                self._on_bytes(len(chunk))
                yield chunk

    async def read(self) -> bytes:
        """The whole remaining body (small assets and tests)."""
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def raise_for_status(self) -> None:
        """Raise the ``APIStatusError`` subclass for an error status (reads a short body)."""
        if self.status >= 400:
            with translate_errors("GET", self.url):
                raw = await self._response.content.read(4096)
            raise error_for_status(self.status, self.headers, raw, method="GET", url=self.url)


@contextlib.asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    *,
    start: int = 0,
    client_timeout: aiohttp.ClientTimeout,
    on_bytes: Callable[[int], None],
) -> AsyncIterator[AssetStream]:
    """GET ``url`` without credentials; ``start > 0`` sends ``Range: bytes=start-``."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"asset URL must be http(s): {url!r}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    # No Authorization: asset hosts are not Luma's API. Identity encoding keeps byte
    # offsets meaningful for Range resumes.
    headers = {"Accept-Encoding": "identity"}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    with translate_errors("GET", url):
        response = await session.get(url, headers=headers, timeout=client_timeout)
    try:
        yield AssetStream(url, response, on_bytes)
    finally:
        response.release()
