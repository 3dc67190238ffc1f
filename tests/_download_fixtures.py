"""A fake asset host for download tests: Range, cuts, expiry, slow bodies."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

import anyio

from lumasched.errors import TransportError


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic bytes that differ at every offset (so a wrong Range shows)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096
    out = bytearray()
    i = 0
    while len(out) < size:
        out += bytes((b + i) % 256 for b in block[:256])
        i += 1
    return bytes(out[:size])


class FakeAssetStream:
    def __init__(
        self,
        status: int,
        body: Callable[[int, int], AsyncIterator[bytes]] | None,
        *,
        start: int,
        total: int,
        cut_at: int | None,
        announce_length: bool,
    ) -> None:
        self.status = status
        self._body = body
        self._start = start
        self._cut_at = cut_at
        partial = status == 206
        length = total - start if partial else total
        self.content_length: int | None = length if announce_length and status < 300 else None
        self.content_range = (start, total - 1, total) if partial else None
        self.total_size: int | None = total if status in (200, 206, 416) else None

    async def iter_chunks(self, size: int = 65536) -> AsyncIterator[bytes]:
        if self._body is None:
            return
        sent = 0
        offset = self._start if self.status == 206 else 0
        async for chunk in self._body(offset, size):
            if self._cut_at is not None and sent + len(chunk) > self._cut_at:
                yield chunk[: self._cut_at - sent]
                raise TransportError("Response payload is not completed")
            sent += len(chunk)
            yield chunk
            await anyio.sleep(0)


class FakeAssetClient:
    """Serves ``files`` (url -> bytes, or url -> (size, chunk generator)).

    ``cuts`` are byte counts after which the next responses break off; URLs in
    ``expired`` answer 403; ``statuses`` forces the next responses' status;
    ``ignore_range`` answers every Range request with the whole file (200).
    """

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.streams: dict[str, tuple[int, Callable[[int, int], AsyncIterator[bytes]]]] = {}
        self.cuts: list[int] = []
        self.expired: set[str] = set()
        self.statuses: list[int] = []
        self.ignore_range = False
        self.announce_length = True
        self.requests: list[tuple[str, int]] = []
        self.open_now = 0
        self.peak_open = 0

    def _source(self, url: str) -> tuple[int, Callable[[int, int], AsyncIterator[bytes]]] | None:
        if url in self.streams:
            return self.streams[url]
        if url not in self.files:
            return None
        data = self.files[url]

        async def body(offset: int, size: int) -> AsyncIterator[bytes]:
            for i in range(offset, len(data), size):
                yield data[i : i + size]

        return len(data), body

    @contextlib.asynccontextmanager
    async def open_asset(self, url: str, *, start: int = 0) -> AsyncIterator[FakeAssetStream]:
        self.requests.append((url, start))
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        try:
            source = self._source(url)
            forced = self.statuses.pop(0) if self.statuses else None
            if forced is not None or source is None or url in self.expired:
                status = forced or (403 if url in self.expired else 404)
                yield FakeAssetStream(
                    status,
                    None,
                    start=0,
                    total=0,
                    cut_at=None,
                    announce_length=False,
                )
                return
            total, body = source
            if start >= total and start > 0:
                status = 416
            elif start > 0 and not self.ignore_range:
                status = 206
            else:
                status = 200
            yield FakeAssetStream(
                status,
                None if status == 416 else body,
                start=start,
                total=total,
                cut_at=self.cuts.pop(0) if self.cuts else None,
                announce_length=self.announce_length,
            )
        finally:
            self.open_now -= 1
