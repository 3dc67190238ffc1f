"""Streamed, resumable, verified, atomic asset downloads.

A download streams into ``.<name>.part`` beside the target, hashing (sha256) as
it writes, so memory stays flat whatever the asset size. When the body is cut
short, the next attempt asks for the rest with ``Range`` (and starts over cleanly
if the server ignores it and sends the whole file). When the URL has expired
(403, 404 or 410), ``refresh_url()`` supplies a fresh one, typically by
re-fetching the generation. A complete file is checked against Content-Length,
``fsync``-ed, and renamed over the target in one atomic step: the target is
either absent, the old file, or the whole new one, never half written.

Cancellation (or a final failure) keeps the ``.part`` file, so the next
``download()`` of the same target resumes where it stopped; its bytes are
re-hashed from disk first. A target that already exists with the expected
sha256 is not downloaded again.

Every download is bounded by ``max_size``: a larger declared length is refused
before any byte is read, and a body that goes on past it is cut there; either
way the partial file is removed and ``AssetTooLargeError`` raised. A disk that
refuses the bytes (no space, read-only, a directory in the way, permissions)
raises ``DownloadError`` with that reason in a few words.

Example::

    downloader = Downloader(client, max_concurrent=4)
    result = await downloader.download(url, safe_target(out_dir, job_key, "mp4"))
    print(result.path, result.sha256, result.bytes)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import anyio
import attrs
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from lumasched._config import DEFAULT_MAX_ASSET_SIZE
from lumasched.api._retry import RetryPolicy
from lumasched.errors import AssetTooLargeError, DownloadError, LumaError, TooManyRedirects
from lumasched.store._storage import os_reason

if TYPE_CHECKING:
    from lumasched.api import AssetStream

__all__ = [
    "DownloadResult",
    "Downloader",
    "DownloaderStats",
    "download_asset",
    "part_path",
    "safe_target",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_EXPIRED = frozenset({403, 404, 410})
_HASH_CHUNK = 1 << 20
_IN_MEMORY = 1 << 20
"""A body up to this size is kept in memory and written, synced and published in
one worker-thread call: creating a file on the event loop stalls it (the
folder's lock is shared with the renames and syncs running beside it)."""
_MAX_NAME_BYTES = 255


class _AssetClient(Protocol):
    def open_asset(
        self, url: str, *, start: int = ...
    ) -> contextlib.AbstractAsyncContextManager[AssetStream]: ...


@attrs.frozen
class DownloadResult:
    path: Path
    sha256: str
    bytes: int
    skipped: bool = False
    """True when the target was already there with the expected sha256."""


@attrs.frozen
class DownloaderStats:
    """A snapshot of a ``Downloader``'s counters."""

    downloads: int = 0
    """Files completed (renamed into place)."""
    skipped: int = 0
    """Targets already present with the expected sha256."""
    bytes: int = 0
    """Bytes received (resumed bytes are not counted twice)."""
    resumes: int = 0
    """Attempts that continued a partial file with ``Range``."""
    restarts: int = 0
    """Partial files thrown away (Range ignored or unusable)."""
    refreshes: int = 0
    """Fresh URLs fetched after an expired one."""
    retries: int = 0
    """Attempts that failed and were retried."""
    failures: int = 0
    """Downloads given up (``DownloadError`` raised)."""
    active: int = 0
    """Downloads streaming right now."""


class _Retry(Exception):
    """This attempt failed in a way worth another."""


class _Expired(Exception):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class _Again(Exception):
    """Another attempt, after ``wait`` seconds (``Downloader._try`` decided)."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        super().__init__(f"again in {wait:.2f}s")


@attrs.define
class _Tries:
    """One download's attempts so far, and the URL the next one uses."""

    url: str
    failures: int = 0
    """Failed attempts in a row that received no bytes."""
    refreshes: int = 0


def _wait_asked(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc.wait if isinstance(exc, _Again) else 0.0


def safe_target(out_dir: Path, name: str, ext: str) -> Path:
    """``out_dir/<name>.<ext>``, refusing any name that could land elsewhere.

    Raises ``ValueError`` for an empty name, path separators, ``..``, a leading
    dot (hidden files, and our ``.part`` files), NUL or control characters,
    an extension that is not short and alphanumeric, or a name too long for
    the filesystem.
    """
    ext = ext.lstrip(".")
    if not name or name in {".", ".."} or name.startswith("."):
        raise ValueError(f"unsafe output name {name!r}")
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"output name {name!r} contains a path separator or control character")
    if not (ext.isascii() and ext.isalnum() and len(ext) <= 8):
        raise ValueError(f"unsafe file extension {ext!r}")
    filename = f"{name}.{ext}"
    if len(part_path(Path(filename)).name.encode()) > _MAX_NAME_BYTES:
        raise ValueError(f"output name {name[:40]!r}... is too long")
    base = Path(out_dir)
    target = base / filename
    if target.parent != base or Path(filename).is_absolute():
        raise ValueError(f"output name {name!r} escapes {out_dir}")
    return target


def part_path(target: Path) -> Path:
    """Where ``target`` is assembled: ``.<name>.part`` in the same directory."""
    return target.with_name(f".{target.name}.part")


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks (blocking: use a thread in async code)."""
    digest: str = _hash_file(path)[0].hexdigest()
    return digest


def _hash_file(path: Path) -> tuple[Any, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher, size


def _existing_match(target: Path, expected: str) -> int | None:
    """The size of ``target`` if it exists with sha256 ``expected``."""
    try:
        hasher, size = _hash_file(target)
    except FileNotFoundError:
        return None
    return size if hasher.hexdigest() == expected.lower() else None


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # let the read in the worker thread report what is wrong
    return True


def _open_part(path: Path, *, append: bool) -> BinaryIO:
    try:
        # The folder is there for all but the first file: no mkdir call per job.
        return open(path, "ab" if append else "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab" if append else "wb")


def _publish(part: Path, target: Path) -> None:
    os.replace(part, target)
    _sync_folder(target.parent)


def _sync_folder(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal(f: BinaryIO | None, part: _Part) -> None:
    """Write what ``part`` holds in memory (when ``f`` is None), flush, fsync and
    close the whole part file; publish it at once if nothing is left to check
    (one thread hop per download instead of two)."""
    if f is None:
        with _open_part(part.path, append=False) as fresh:
            fresh.write(part.buffer)
            part.buffer, part.on_disk = bytearray(), True
            _sync(fresh)
    else:
        try:
            _sync(f)
        finally:
            f.close()
    if part.publish_to is not None:
        _publish(part.path, part.publish_to)
        part.published = True


@attrs.define
class _Sealing:
    """A part held in memory, waiting for ``_seal_many``."""

    part: _Part
    done: bool = False
    error: BaseException | None = None


def _seal_many(batch: list[_Sealing]) -> None:
    """``_seal`` of parts held in memory, one after another in this thread, with
    one fsync per folder for all the files published into it (after their
    renames, before any is reported done). Each entry gets its own error."""
    published: dict[Path, list[_Sealing]] = {}
    for entry in batch:
        part = entry.part
        try:
            with _open_part(part.path, append=False) as fresh:
                fresh.write(part.buffer)
                part.buffer, part.on_disk = bytearray(), True
                _sync(fresh)
            if part.publish_to is not None:
                os.replace(part.path, part.publish_to)
                published.setdefault(part.publish_to.parent, []).append(entry)
        except Exception as exc:
            entry.error = exc
    for folder, entries in published.items():
        try:
            _sync_folder(folder)
        except Exception as exc:
            for entry in entries:
                entry.error = exc
        else:
            for entry in entries:
                entry.part.published = True


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _close(f: BinaryIO | None) -> None:
    if f is not None:
        f.close()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Downloader:
    """Downloads asset URLs to files, at most ``max_concurrent`` at once.

    ``attempts`` bounds consecutive failed attempts that made no progress (an
    attempt that received bytes resets the count), and separately the number of
    URL refreshes. Waits between attempts grow from ``backoff`` to ``max_backoff``.
    ``max_size`` is the largest asset accepted, in bytes (``None``: no limit).
    ``disk_limiter``, if given, is a ``CapacityLimiter`` that the sealing of
    small files (created, synced and renamed in batches, see
    ``_seal_in_memory``) runs under: the scheduler shares one of a single token
    with its journal's commits, so that the two never fsync side by side.
    """

    def __init__(
        self,
        client: _AssetClient,
        *,
        max_concurrent: int = 4,
        chunk_size: int = 1 << 16,
        attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_size: int | None = DEFAULT_MAX_ASSET_SIZE,
        disk_limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self._max_size = max_size
        self._client = client
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self._chunk = chunk_size
        self._attempts = attempts
        # The waits only: an attempt that made progress resets the count, so
        # _try, not a stop rule, decides when to give up.
        self._retry = RetryPolicy(
            attempts=attempts, total_timeout=math.inf, initial=backoff, max=max_backoff, jitter=0.0
        )
        self._locks: dict[Path, anyio.Lock] = {}
        self._sealing: list[_Sealing] = []
        """Parts held in memory, waiting to be sealed (see ``_seal_in_memory``)."""
        self._disk = disk_limiter
        self._seal_running: anyio.Event | None = None
        """Set once the batch being sealed now is done."""
        self._stats: dict[str, int] = dict.fromkeys(attrs.fields_dict(DownloaderStats), 0)

    def stats(self) -> DownloaderStats:
        return DownloaderStats(**self._stats)

    async def download(
        self,
        url: str,
        target: Path,
        *,
        refresh_url: Callable[[], Awaitable[str]] | None = None,
        expected_sha256: str | None = None,
    ) -> DownloadResult:
        """Download ``url`` to ``target`` (atomically); raise ``DownloadError`` on failure."""
        target = Path(target)
        # One download per target at a time: two writers would share the part file.
        lock = self._locks.setdefault(target, anyio.Lock())
        try:
            async with lock, self._limiter:
                return await self._download_locked(url, target, refresh_url, expected_sha256)
        except OSError as exc:
            # A rename onto a directory names it second; a write names no file.
            where = exc.filename2 or exc.filename or part_path(target)
            self._stats["failures"] += 1
            raise DownloadError(f"{target.name}: {os_reason(exc, where)}") from exc
        finally:
            if not lock.statistics().tasks_waiting and not lock.locked():
                self._locks.pop(target, None)

    async def _download_locked(
        self,
        url: str,
        target: Path,
        refresh_url: Callable[[], Awaitable[str]] | None,
        expected_sha256: str | None,
    ) -> DownloadResult:
        if expected_sha256 is not None:
            size = await anyio.to_thread.run_sync(_existing_match, target, expected_sha256)
            if size is not None:
                self._stats["skipped"] += 1
                return DownloadResult(target, expected_sha256.lower(), size, skipped=True)
        self._stats["active"] += 1
        try:
            # Without a digest to verify, the hop that syncs the part also publishes it.
            part = _Part(part_path(target), publish_to=target if expected_sha256 is None else None)
            # Resume a part file a cancelled or failed download left: re-hash its bytes.
            # Almost always there is none: a stat on the loop (as cheap as the open
            # that follows there) spares the worker-thread hop of trying to read it.
            if _exists(part.path):
                with contextlib.suppress(FileNotFoundError):
                    part.hasher, part.size = await anyio.to_thread.run_sync(_hash_file, part.path)
                    part.on_disk = True
            digest = await self._fetch(url, target, part, refresh_url)
            if expected_sha256 is not None and digest != expected_sha256.lower() and part.resumed:
                # The leftover part may hold other bytes (an older asset): start over once.
                logger.info("%s: resumed bytes did not verify; downloading again", target.name)
                self._restart(part)
                digest = await self._fetch(url, target, part, refresh_url)
            if expected_sha256 is not None and digest != expected_sha256.lower():
                await anyio.to_thread.run_sync(_unlink, part.path)
                raise DownloadError(
                    f"{target.name}: sha256 {digest} does not match the expected {expected_sha256}"
                )
            if not part.published:
                await anyio.to_thread.run_sync(_publish, part.path, target)
            self._stats["downloads"] += 1
            return DownloadResult(target, digest, part.size)
        except DownloadError:
            self._stats["failures"] += 1
            raise
        finally:
            self._stats["active"] -= 1

    async def _fetch(
        self,
        url: str,
        target: Path,
        part: _Part,
        refresh_url: Callable[[], Awaitable[str]] | None,
    ) -> str:
        """Complete ``part`` (retrying, resuming, refreshing); return its sha256.

        Tenacity runs the attempts; ``_try`` decides each one's fate, since an
        attempt that made progress resets the failure count (a stop rule of
        tenacity's cannot see that) and a refreshed URL is tried at once."""
        tries = _Tries(url)
        try:
            # The first attempt runs bare: it almost always succeeds, and
            # tenacity's set-up is a visible share of a small download's CPU.
            await self._try(target, part, refresh_url, tries)
        except _Again as again:
            await anyio.sleep(again.wait)
        else:
            digest: str = part.hasher.hexdigest()
            return digest
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Again),
            wait=_wait_asked,
            stop=stop_never,
            reraise=True,
            sleep=anyio.sleep,
        )
        await retrying(self._try, target, part, refresh_url, tries)
        return str(part.hasher.hexdigest())

    async def _try(
        self,
        target: Path,
        part: _Part,
        refresh_url: Callable[[], Awaitable[str]] | None,
        tries: _Tries,
    ) -> None:
        """One attempt: done, ``_Again`` (with the wait before the next), or a
        ``DownloadError`` that ends the download."""
        before = part.size
        try:
            await self._attempt(tries.url, part)
        except DownloadError:
            raise  # final (too large): no second attempt
        except TooManyRedirects as exc:
            raise DownloadError(f"{target.name}: {exc}") from exc
        except _Expired as exc:
            if refresh_url is None:
                raise DownloadError(
                    f"asset URL answered {exc.status} (expired?) and cannot be refreshed"
                ) from None
            tries.refreshes += 1
            if tries.refreshes > self._attempts:
                raise DownloadError(
                    f"asset URL still answers {exc.status} after {tries.refreshes - 1} refreshes"
                ) from None
            try:
                tries.url = await refresh_url()
            except LumaError as refresh_exc:
                raise DownloadError(
                    f"could not refresh the asset URL: {refresh_exc}"
                ) from refresh_exc
            self._stats["refreshes"] += 1
            raise _Again(0.0) from exc
        except (_Retry, LumaError) as exc:
            tries.failures = 0 if part.size > before else tries.failures + 1
            if tries.failures >= self._attempts:
                raise DownloadError(
                    f"download of {target.name} failed after {tries.failures} attempts: {exc}"
                ) from exc
            self._stats["retries"] += 1
            logger.info("download of %s interrupted (%s); retrying", target.name, exc)
            raise _Again(self._retry.wait(max(tries.failures, 1), None)) from exc
        except OSError as exc:
            # A rename onto a directory (the publish, in the same hop as the
            # fsync) names it second; a write names no file.
            where = exc.filename2 or part.path
            raise DownloadError(f"{target.name}: {os_reason(exc, where)}") from exc

    async def _attempt(self, url: str, part: _Part) -> None:
        """One GET from ``part.size`` on; returns when the part file is whole and synced."""
        async with self._client.open_asset(url, start=part.size) as stream:
            status = stream.status
            if status in _EXPIRED:
                raise _Expired(status)
            total = stream.total_size
            if status == 416:
                if part.size > 0 and total == part.size:
                    # The part is already whole: sync (and publish) it as a body would be.
                    await anyio.to_thread.run_sync(_seal, self._reopen(part), part)
                    return
                self._restart(part)
                raise _Retry(f"range {part.size}- not satisfiable (size {total})")
            if status == 206:
                first = stream.content_range[0] if stream.content_range else None
                if first != part.size:
                    self._restart(part)
                    raise _Retry(f"asked for bytes {part.size}-, got a range from {first}")
                self._stats["resumes"] += 1
                part.resumed = True
            elif status == 200:
                if part.size > 0:
                    logger.info("server ignored Range for %s; starting over", part.path.name)
                    self._restart(part)
            else:
                raise _Retry(f"asset answered HTTP {status}")
            start = part.size
            limit = self._max_size
            declared = total if total is not None else stream.content_length
            if declared is not None and status == 206 and total is None:
                declared += start
            if limit is not None and declared is not None and declared > limit:
                self._drop(part)
                raise AssetTooLargeError(part.name, limit, declared)
            # Bytes already on disk are appended to; a new body stays in memory
            # while it is small (see _IN_MEMORY).
            f = self._reopen(part)
            try:
                async for chunk in stream.iter_chunks(self._chunk):
                    if limit is not None and part.size + len(chunk) > limit:
                        _close(f)
                        f = None
                        self._drop(part)
                        raise AssetTooLargeError(part.name, limit)
                    if f is None and len(part.buffer) + len(chunk) > _IN_MEMORY:
                        f = _open_part(part.path, append=False)
                        f.write(part.buffer)
                        part.buffer = bytearray()
                        part.on_disk = True
                    if f is None:
                        part.buffer += chunk
                    else:
                        f.write(chunk)
                    part.hasher.update(chunk)
                    part.size += len(chunk)
                    self._stats["bytes"] += len(chunk)
                    if total is not None and part.size > total:
                        _close(f)
                        f = None
                        self._restart(part)
                        raise _Retry(f"received more than the announced {total} bytes")
                got = part.size - start
                if stream.content_length is not None and got != stream.content_length:
                    raise _Retry(f"body cut at {got} of {stream.content_length} bytes")
                if total is not None and part.size != total:
                    raise _Retry(f"have {part.size} of {total} bytes")
                # Not cancellable: the file is closed only after fsync returns.
                sealing, f = f, None
                if sealing is None:
                    await self._seal_in_memory(part)
                else:
                    await anyio.to_thread.run_sync(_seal, sealing, part)
            finally:
                _close(f)
                if part.buffer:
                    # Cut, failed or cancelled: what came is left in the part file to
                    # resume from, as when every byte went to disk at once.
                    self._spill(part)

    async def _seal_in_memory(self, part: _Part) -> None:
        """``_seal`` a part held in memory, together with the others waiting: the
        files are created, synced and published one after another in one
        worker-thread call, and their folder synced once. Files created in one
        folder from several threads at once cost far more CPU (they contend
        for the folder and the file system's journal), one hop and one folder
        sync per file cost more too, and the downloads that finish together
        report together (their journal writes share a commit)."""
        entry = _Sealing(part)
        self._sealing.append(entry)
        # Not cancellable: a file is closed only after its fsync returns.
        with anyio.CancelScope(shield=True):
            while not entry.done:
                running = self._seal_running
                if running is not None:
                    # The next batch takes this part along: wait for the one running.
                    await running.wait()
                else:
                    await self._seal_batch()
        if entry.error is not None:
            raise entry.error

    async def _seal_batch(self) -> None:
        """Seal every part waiting, in one worker-thread call; those that wait on
        it all go on together when it is done."""
        batch, self._sealing = self._sealing, []
        running = self._seal_running = anyio.Event()
        try:
            await anyio.to_thread.run_sync(_seal_many, batch, limiter=self._disk)
        except BaseException as exc:  # pragma: no cover - the thread itself failed
            for waiting in batch:
                waiting.error = waiting.error or exc
            raise
        finally:
            for waiting in batch:
                waiting.done = True
            self._seal_running = None
            running.set()

    @staticmethod
    def _reopen(part: _Part) -> BinaryIO | None:
        """The part file to append to when its bytes are on disk; None when they
        are in memory (or there are none yet)."""
        return _open_part(part.path, append=True) if part.on_disk else None

    def _restart(self, part: _Part) -> None:
        self._stats["restarts"] += 1
        self._drop(part)

    @staticmethod
    def _spill(part: _Part) -> None:
        try:
            with _open_part(part.path, append=False) as f:
                f.write(part.buffer)
        except OSError:
            # Start over rather than resume from bytes no file holds (the failure
            # that brought us here is the one to report).
            part.hasher, part.size, part.resumed = hashlib.sha256(), 0, False
            part.buffer, part.on_disk = bytearray(), False
            return
        part.buffer, part.on_disk = bytearray(), True

    @staticmethod
    def _drop(part: _Part) -> None:
        _unlink(part.path)
        part.hasher, part.size, part.resumed = hashlib.sha256(), 0, False
        part.buffer, part.on_disk = bytearray(), False


@attrs.define
class _Part:
    path: Path
    hasher: Any = attrs.field(factory=hashlib.sha256)
    size: int = 0
    resumed: bool = False
    publish_to: Path | None = None
    published: bool = False
    buffer: bytearray = attrs.field(factory=bytearray)
    """The part's bytes while they are only in memory (then ``on_disk`` is False)."""
    on_disk: bool = False

    @property
    def name(self) -> str:
        """The target's file name (the part is ``.<name>.part``)."""
        return self.path.name[1 : -len(".part")]


async def download_asset(
    client: _AssetClient,
    url: str,
    target: Path,
    *,
    refresh_url: Callable[[], Awaitable[str]] | None = None,
    expected_sha256: str | None = None,
    **kwargs: Any,
) -> DownloadResult:
    """One download with a throwaway ``Downloader(client, **kwargs)``."""
    downloader = Downloader(client, **kwargs)
    return await downloader.download(
        url, target, refresh_url=refresh_url, expected_sha256=expected_sha256
    )
