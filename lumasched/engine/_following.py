"""Following created generations to their end, through the one ``Poller``.

A job's generation is watched until the server says it is terminal; then its
slot is freed and, with an output directory, its asset is downloaded before
the job completes. Leases that dead holders left in a shared limiter
("orphans") are followed the same way, so their slots come back when their
generations end rather than never.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from lumasched.api import Family
from lumasched.engine._context import EngineContext
from lumasched.engine.jobs import Job, JobResult
from lumasched.engine.jobs import JobState as S
from lumasched.errors import DownloadError, GenerationFailed, LumaError, MissingAssetError

if TYPE_CHECKING:
    from lumasched.api import Generation
    from lumasched.engine.downloads import Downloader
    from lumasched.engine.poller import LatencyKey, Poller

__all__ = ["Follower"]

logger = logging.getLogger("lumasched.engine.scheduler")

ORPHAN_SCAN_INTERVAL = 10.0
"""Seconds between asks to the limiter for leases whose holders died."""

ASSET_REREAD_DELAYS = (1.0, 2.0, 4.0, 8.0)
"""Waits before each re-read of a generation that completed without an asset URL
(servers may publish the asset a moment after the state flips)."""

_TEXT_LIMIT = 2000
_URL_LIMIT = 16 * 1024


class Follower:
    """Watches generations for the scheduler and finishes their jobs.

    ``spawn(fn, *args)`` starts a task in the scheduler's task group (the
    poller's callbacks must stay quick, so journal writes and downloads run
    there). ``downloads`` and ``bytes_downloaded`` count what was fetched.
    """

    def __init__(
        self,
        ctx: EngineContext,
        poller: Poller,
        downloader: Downloader | None,
        *,
        job_timeout: float | None = None,
    ) -> None:
        self._client = ctx.client
        self._job_timeout = job_timeout
        self._poller = poller
        self._downloader = downloader
        self._out_dir = ctx.out_dir
        self._table = ctx.table
        self._slots = ctx.slots
        self._writes = ctx.writes
        self._clock = ctx.clock
        self._spawn = ctx.spawn
        self.downloads = 0
        self.bytes_downloaded = 0

    # -- a job's generation ----------------------------------------------------------

    def watch(self, job: Job, generation: Generation, *, learn: bool) -> None:
        """Follow the generation ``job`` just created (or reconcile found)."""
        from lumasched.engine.poller import latency_key_for

        if generation.is_terminal:
            self._spawn(self._on_terminal, job, generation)
            return
        self._watch(job, generation.id, key=latency_key_for(job.request), learn=learn)

    def watch_restored(self, job: Job, generation_id: str) -> None:
        """Follow a generation recorded by an earlier run (its age is unknown, so
        it teaches the latency estimate nothing)."""
        self._watch(job, generation_id, key=("restored", None, None), learn=False)

    def _watch(self, job: Job, generation_id: str, *, key: LatencyKey, learn: bool) -> None:
        timeout = self._job_timeout
        self._poller.watch(
            generation_id,
            key=key,
            on_update=partial(self._on_update, job),
            on_error=partial(self._on_gone, job),
            learn=learn,
            deadline=None if timeout is None else self._clock.monotonic() + timeout,
        )

    async def _on_update(self, job: Job, generation: Generation) -> None:
        """The poller's callback: stays quick (journal writes happen in a task)."""
        if not generation.is_terminal:
            if not job.done:
                self._table.emit(job, job.state, server_state=str(generation.state))
            return
        self._spawn(self._on_terminal, job, generation)

    async def _on_terminal(self, job: Job, generation: Generation) -> None:
        await self._slots.release(job)
        if job.done:
            return
        completed_at = time.time()
        job.timings = attrs.evolve(job.timings, completed=completed_at)
        if generation.state != "completed":
            await self._writes.update(job.key, generation=journal_generation(generation))
            self._table.fail(job, GenerationFailed(generation.id, generation.failure_reason))
            return
        if generation.asset_url is None:
            found = await self._reread_for_asset(generation)
            if found is None:
                # Never "completed" without its asset: the id stays in the journal,
                # so a later run polls the generation and fetches the asset then.
                self._table.fail(job, MissingAssetError(generation.id))
                return
            generation = found
        if self._out_dir is not None:
            # Queued, not awaited: the download's own end is committed after it (in
            # order), and a crash before either leaves a generation to poll again.
            self._writes.update_soon(
                job.key,
                state="downloading",
                generation=journal_generation(generation),
                completed_at=completed_at,
            )
            self._table.set_state(job, S.DOWNLOADING)
            await self.download(job, generation)
            return
        await self._writes.update(
            job.key,
            state="completed",
            generation=journal_generation(generation),
            completed_at=completed_at,
        )
        self._table.complete(job, JobResult(job.key, generation, timings=job.timings))

    async def _reread_for_asset(self, generation: Generation) -> Generation | None:
        """Re-read a generation that completed without an asset URL, with waits
        between reads; the first answer that names one, else None."""
        # Not a retry loop: waiting for the asset to be published; a read that
        # fails is one attempt (retry=False), the next round its only retry.
        for delay in ASSET_REREAD_DELAYS:
            await self._clock.sleep(delay)
            try:
                fresh = await self._client.get(generation.id, retry=False)
            except LumaError as exc:
                logger.info("re-reading generation %s for its asset: %s", generation.id, exc)
                continue
            if fresh.asset_url is not None:
                return fresh
        logger.warning("generation %s completed without an asset URL", generation.id)
        return None

    async def _on_gone(self, job: Job, exc: BaseException) -> None:
        await self._slots.release(job)
        if not job.done:
            self._table.fail(job, exc if isinstance(exc, LumaError) else LumaError(str(exc)))

    # -- its asset ---------------------------------------------------------------------

    async def download(self, job: Job, generation: Generation) -> None:
        from lumasched.engine.downloads import safe_target

        assert self._out_dir is not None and self._downloader is not None
        url = generation.asset_url
        if url is None:
            self._table.fail(job, MissingAssetError(generation.id))
            return
        # The job timeout bounds the download too: an asset trickling in cannot hold
        # the job for ever (the part file stays, so a rerun resumes it).
        limit = self._job_timeout
        try:
            target = safe_target(self._out_dir, job.key, _extension(url, job.request.kind))
            with anyio.fail_after(limit):
                result = await self._downloader.download(
                    url, target, refresh_url=partial(self._fresh_url, generation.id)
                )
        except (LumaError, ValueError) as exc:
            error = exc if isinstance(exc, DownloadError) else DownloadError(str(exc))
            self._table.fail(job, error)
            return
        except TimeoutError:
            self._table.fail(job, DownloadError(f"download not finished after {limit:g}s"))
            return
        at = time.time()
        job.timings = attrs.evolve(job.timings, downloaded=at)
        if not result.skipped:
            self.downloads += 1
            self.bytes_downloaded += result.bytes
        await self._writes.update(
            job.key,
            state="completed",
            path=str(result.path),
            sha256=result.sha256,
            bytes=result.bytes,
            downloaded_at=at,
        )
        self._table.complete(
            job,
            JobResult(
                job.key,
                generation,
                path=str(result.path),
                sha256=result.sha256,
                bytes=result.bytes,
                timings=job.timings,
            ),
        )

    async def _fresh_url(self, generation_id: str) -> str:
        generation = await self._client.get(generation_id)
        url = generation.asset_url
        if url is None:
            raise DownloadError(f"generation {generation_id} has no asset URL any more")
        return url

    # -- orphans: leases of dead holders, from a shared limiter ----------------------------

    async def adopt_orphans(self) -> None:
        """Runs until cancelled."""
        limiter = self._slots.limiter
        while True:
            await self._clock.sleep(ORPHAN_SCAN_INTERVAL)
            for family in Family:
                try:
                    orphans = await limiter.adopt_orphans(family)
                except Exception as exc:  # a shared limiter's outage must not stop the batch
                    logger.warning("adopting orphan leases failed: %s", exc)
                    continue
                for orphan in orphans:
                    self._follow_orphan(orphan.family, orphan.lease_id, orphan.generation_id)

    def _follow_orphan(self, family: Family, lease: str, generation_id: str) -> None:
        async def done(update: object) -> None:
            # an update without ``is_terminal`` is the poller's error: the generation is gone
            if getattr(update, "is_terminal", True):
                await self._slots.release_lease(family, lease)

        if self._table.owner_of(generation_id) is not None:
            return
        self._poller.watch(
            generation_id, key=("orphan", None, None), on_update=done, on_error=done, learn=False
        )


def journal_generation(generation: Generation) -> dict[str, Any]:
    """What a resume needs of a generation, for the journal: its id, state, failure
    reason and asset URLs, never the server's whole (and unbounded) payload."""
    data: dict[str, Any] = {"id": generation.id, "state": str(generation.state)}
    if generation.failure_reason:
        data["failure_reason"] = generation.failure_reason[:_TEXT_LIMIT]
    if generation.created_at is not None:
        data["created_at"] = generation.created_at.isoformat()
    for name in ("generation_type", "model"):
        value = getattr(generation, name)
        if value and len(value) <= _TEXT_LIMIT:
            data[name] = value
    assets = generation.assets
    if assets is not None:
        urls = {
            name: url
            for name in ("video", "image")
            if (url := getattr(assets, name)) and len(url) <= _URL_LIMIT
        }
        if urls:
            data["assets"] = urls
    return data


def _extension(url: str, kind: str) -> str:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if "." in name:
        ext = name.rsplit(".", 1)[-1].lower()
        if ext.isalnum() and len(ext) <= 5:
            return ext
    return "jpg" if kind in ("image", "reframe_image") else "mp4"
