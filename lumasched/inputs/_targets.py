"""Where local inputs are stored: the ``UploadTarget`` protocol, and the
emulator's own store (``EmulatorTarget``), so an offline run needs no bucket.

A target stores objects under content-addressed keys and hands out the URL the
Dream Machine service (or the emulator) fetches; ``lumasched.inputs._s3`` is
the S3-compatible one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import aiohttp
import anyio

from lumasched.api._inputs import EMULATOR_UPLOADS_PATH
from lumasched.errors import UploadError

__all__ = ["EMULATOR_UPLOADS_PATH", "EmulatorTarget", "UploadTarget"]


class UploadTarget(Protocol):
    """Storage for input files: the identity the upload log keys on, and four calls."""

    @property
    def name(self) -> str:
        """``s3://bucket/prefix`` (with its endpoint), ``emulator@ORIGIN``: where objects go."""
        ...

    def key_for(self, sha256: str, suffix: str) -> str:
        """The object key of a file with this content."""
        ...

    async def exists(self, key: str) -> bool:
        """Is the object stored already (uploaded by an earlier run or host)?"""
        ...

    async def put(self, key: str, path: Path, content_type: str) -> None:
        """Store ``path``'s bytes under ``key``."""
        ...

    async def url(self, key: str) -> tuple[str, float | None]:
        """A URL that serves the object, and for how many seconds (None: always)."""
        ...


class EmulatorTarget:
    """The emulator's upload store at ``origin`` (``http://HOST:PORT``), written
    with its API key; URLs are plain and do not expire."""

    def __init__(self, origin: str, api_key: str, session: aiohttp.ClientSession) -> None:
        self._origin = origin.rstrip("/")
        self._key = api_key
        self._session = session

    def __repr__(self) -> str:
        return f"EmulatorTarget({self._origin!r})"

    @property
    def name(self) -> str:
        return f"emulator@{self._origin}"

    def key_for(self, sha256: str, suffix: str) -> str:
        return f"{sha256}{suffix}"

    def _url(self, key: str) -> str:
        return self._origin + EMULATOR_UPLOADS_PATH + quote(key)

    async def exists(self, key: str) -> bool:
        try:
            async with self._session.head(self._url(key)) as response:
                return response.status == 200
        except aiohttp.ClientError as exc:
            raise UploadError(f"emulator store: {exc}", target=self.name, path=key) from exc

    async def put(self, key: str, path: Path, content_type: str) -> None:
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": content_type}
        # Streamed from the open file: aiohttp reads it off the event loop.
        body = await anyio.to_thread.run_sync(path.open, "rb")
        try:
            async with self._session.put(self._url(key), data=body, headers=headers) as response:
                if response.status not in (200, 201):
                    detail = (await response.text())[:200]
                    raise UploadError(
                        f"emulator store answered {response.status}: {detail}",
                        target=self.name,
                        path=str(path),
                    )
        except aiohttp.ClientError as exc:
            raise UploadError(f"emulator store: {exc}", target=self.name, path=str(path)) from exc
        finally:
            body.close()

    async def url(self, key: str) -> tuple[str, float | None]:
        return self._url(key), None
