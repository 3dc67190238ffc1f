"""``Uploads``: local files in requests become URLs of the user's storage, each
file stored once.

A file is hashed (sha256, remembered by path, size and mtime), stored under a
content-addressed key unless the upload log or the target already has it, and
its URL recorded in the log. ``resolve`` swaps a request's ``file://`` URLs for
those URLs just before the create is sent (the ``InputResolver`` the scheduler
takes), re-signing a presigned URL whose remaining life is below the margin.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import attrs

from lumasched._config import DEFAULT_RESIGN_MARGIN
from lumasched.api import CreateRequest
from lumasched.api._inputs import MediaKind, is_local, local_path, media_slots, replace_media_urls
from lumasched.errors import LumaError, Problem, UploadError, ValidationError
from lumasched.inputs._checks import InputFile, InputProblem, check_input
from lumasched.inputs._targets import UploadTarget
from lumasched.store.uploads import UploadLog, UploadRecord

__all__ = ["UploadPlan", "UploadStats", "Uploads"]

DEFAULT_UPLOAD_CONCURRENCY = 4


@attrs.frozen
class UploadPlan:
    """What a run would upload (``--dry-run``): distinct files, by whether the
    target already holds them."""

    target: str
    to_upload: tuple[InputFile, ...]
    present: tuple[InputFile, ...]

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.to_upload)

    @property
    def present_bytes(self) -> int:
        return sum(f.size for f in self.present)


@attrs.define
class UploadStats:
    uploaded: int = 0
    uploaded_bytes: int = 0
    found: int = 0
    """Objects the target held already (another run or host stored them)."""
    resigned: int = 0


class Uploads:
    """Resolves local inputs to URLs of ``target``, recording each in ``log``."""

    def __init__(
        self,
        target: UploadTarget,
        log: UploadLog,
        *,
        resign_margin: float = DEFAULT_RESIGN_MARGIN,
        concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.log = log
        self.resign_margin = resign_margin
        self.stats = UploadStats()
        self._clock = clock
        self._limit = anyio.CapacityLimiter(concurrency)
        self._locks: dict[str, anyio.Lock] = {}

    # -- one file --------------------------------------------------------------------

    async def checked(self, path: Path, expect: MediaKind, field: str = "") -> InputFile:
        """``path`` checked as an input; ``ValidationError`` naming ``field`` if unusable."""
        try:
            return await anyio.to_thread.run_sync(check_input, path, expect)
        except InputProblem as exc:
            raise ValidationError([Problem(field, str(exc))]) from None

    async def _sha256(self, file: InputFile) -> str:
        log = self.log
        known = await anyio.to_thread.run_sync(log.hash_of, file.path, file.size, file.mtime_ns)
        if known is not None:
            return known

        def digest() -> str:
            with file.path.open("rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()

        sha = await anyio.to_thread.run_sync(digest)
        await anyio.to_thread.run_sync(log.remember_hash, file.path, file.size, file.mtime_ns, sha)
        return sha

    async def stored(self, file: InputFile) -> UploadRecord:
        """``file``'s record in the log: uploaded first if the target lacks it, its
        URL re-signed first if it expires within the margin."""
        try:
            return await self._stored(file)
        except OSError as exc:  # the file went away (or went bad) since it was checked
            raise UploadError(
                f"cannot read {file.path}: {exc.strerror or exc}",
                target=self.target.name,
                path=str(file.path),
            ) from exc

    async def _stored(self, file: InputFile) -> UploadRecord:
        sha = await self._sha256(file)
        lock = self._locks.setdefault(sha, anyio.Lock())
        async with lock:
            name = self.target.name
            record = await anyio.to_thread.run_sync(self.log.get, name, sha)
            if record is None:
                key = self.target.key_for(sha, file.suffix)
                async with self._limit:
                    if await self.target.exists(key):
                        self.stats.found += 1
                    else:
                        await self.target.put(key, file.path, file.content_type)
                        self.stats.uploaded += 1
                        self.stats.uploaded_bytes += file.size
                url, expires_at = await self._signed(key)
                record = UploadRecord(name, sha, key, file.size, url, expires_at, self._clock())
                await anyio.to_thread.run_sync(self.log.put, record)
            elif (
                record.expires_at is not None
                and record.expires_at - self._clock() < self.resign_margin
            ):
                url, expires_at = await self._signed(record.key)
                record = await anyio.to_thread.run_sync(self.log.renewed, record, url, expires_at)
                self.stats.resigned += 1
        return record

    async def _signed(self, key: str) -> tuple[str, float | None]:
        """The object's URL and when it expires (by this clock; None: never)."""
        signed_at = self._clock()
        url, lifetime = await self.target.url(key)
        return url, None if lifetime is None else signed_at + lifetime

    # -- requests and batches --------------------------------------------------------

    async def resolve(self, request: CreateRequest) -> CreateRequest:
        """``request`` with each local file's URL swapped for its stored URL."""
        urls: dict[str, str] = {}
        for slot in media_slots(request):
            if not is_local(slot.url) or slot.url in urls:
                continue
            file = await self.checked(local_path(slot.url), slot.expect, slot.field)
            urls[slot.url] = (await self.stored(file)).url
        if not urls:
            return request
        return replace_media_urls(request, lambda url: urls.get(url, url))

    async def prepare(self, files: Iterable[InputFile]) -> None:
        """Store every file not stored yet, a few at a time (before a batch starts)."""
        try:
            async with anyio.create_task_group() as tg:
                for file in _distinct(files):
                    tg.start_soon(self.stored, file)
        except BaseExceptionGroup as group:
            # One clear error for the caller (the first file that failed), not a group.
            matched, _ = group.split(LumaError)
            if matched is None:
                raise
            raise _first(matched) from None

    async def plan(self, files: Iterable[InputFile]) -> UploadPlan:
        """Which files would be uploaded, and which the target has already."""
        to_upload: list[InputFile] = []
        present: list[InputFile] = []
        for file in _distinct(files):
            sha = await self._sha256(file)
            if await anyio.to_thread.run_sync(self.log.get, self.target.name, sha) is not None:
                present.append(file)
                continue
            async with self._limit:
                there = await self.target.exists(self.target.key_for(sha, file.suffix))
            (present if there else to_upload).append(file)
        return UploadPlan(self.target.name, tuple(to_upload), tuple(present))


def _first(group: BaseExceptionGroup[LumaError]) -> LumaError:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def _distinct(files: Iterable[InputFile]) -> list[InputFile]:
    return list({file.path: file for file in files}.values())
