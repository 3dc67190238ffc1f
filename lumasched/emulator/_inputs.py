"""The emulator's side of local inputs: its own upload store, and reading a
create's input URLs the way the real service must.

Uploads (``PUT /_emulator/uploads/KEY`` with the emulator's key) are kept in
memory, or in a folder beside the state file so a rerun finds them. At each
create the emulator reads every input URL: its own upload URLs from the store,
others (with ``fetch_inputs``) over HTTP. An input it cannot read ends the
generation ``failed`` with the documented "Failed to read user input frames".
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp

from lumasched._config import MAX_INPUT_VIDEO_BYTES
from lumasched.api._inputs import EMULATOR_UPLOADS_PATH

__all__ = ["InputReader", "UploadStore", "uploads_folder", "valid_key"]

log = logging.getLogger("lumasched.emulator")

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
FETCH_TIMEOUT = 10.0
MAX_UPLOAD_BYTES = MAX_INPUT_VIDEO_BYTES


def uploads_folder(state_path: Path) -> Path:
    """Where an emulator on ``state_path`` keeps its uploads."""
    return state_path.with_name(state_path.name + ".uploads")


def valid_key(key: str) -> bool:
    """An object key the store accepts: one safe path segment."""
    return bool(_KEY.match(key)) and ".." not in key


class UploadStore:
    """Uploaded inputs by key: in memory, or files under ``folder``."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[str, tuple[bytes, str]] = {}
        self.puts = 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts += 1
        if self.folder is None:
            self._memory[key] = (data, content_type)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f".{key}.part"
        part.write_bytes(data)
        part.replace(self.folder / key)
        (self.folder / f".{key}.type").write_text(content_type)

    def get(self, key: str) -> tuple[bytes, str] | None:
        if self.folder is None:
            return self._memory.get(key)
        try:
            data = (self.folder / key).read_bytes()
            content_type = (self.folder / f".{key}.type").read_text()
        except OSError:
            return None
        return data, content_type

    def __contains__(self, key: str) -> bool:
        if self.folder is None:
            return key in self._memory
        return (self.folder / key).is_file()


class InputReader:
    """Reads a create's input URLs; ``origin`` tells its own upload URLs apart."""

    def __init__(self, store: UploadStore, *, fetch: bool) -> None:
        self.store = store
        self.fetch = fetch
        self.origin = ""
        self._session: aiohttp.ClientSession | None = None

    async def readable(self, urls: tuple[str, ...]) -> bool:
        """Can every URL be read (fetched ones only when ``fetch`` is on)?"""
        own = self.origin + EMULATOR_UPLOADS_PATH
        outside = []
        for url in urls:
            if url.startswith(own):
                key = url[len(own) :].split("?", 1)[0]
                if key not in self.store:
                    log.info("input %s is not in the upload store", url)
                    return False
            elif self.fetch:
                outside.append(url)
        if not outside:
            return True
        results = await asyncio.gather(*(self._fetch(url) for url in outside))
        return all(results)

    async def _fetch(self, url: str) -> bool:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    log.info("input %s answered %d", url, response.status)
                    return False
                await response.content.read(64 * 1024)
                return True
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("input %s could not be read: %r", url, exc)
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
