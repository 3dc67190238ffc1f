"""A live page of a running ``Scheduler`` on 127.0.0.1, updated by server-sent
events: per family the jobs in each stage, slots in use against the cap and
creates in the window against the rate (over time), 429s and back-off, the
latency distribution, an ETA and the newest results as thumbnails.

::

    async with Scheduler(client, out_dir="out") as scheduler:
        async with Dashboard(scheduler) as dashboard:
            print("watch at", dashboard.url)
            ...

``lumasched run --dashboard [PORT]`` opens one for the run."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from aiohttp import web

from lumasched._config import DEFAULT_DASHBOARD_PORT
from lumasched.api import Family
from lumasched.engine.jobs import Job, JobEvent, JobState
from lumasched.engine.scheduler import Scheduler
from lumasched.gallery._thumbs import inline_thumbnail

__all__ = ["DEFAULT_DASHBOARD_PORT", "Dashboard"]

logger = logging.getLogger("lumasched.gallery")

HISTORY = 600
"""Samples kept for the charts (five minutes at the default interval)."""
NEWEST = 12
ETA_WINDOW = 60.0
"""Seconds of completions the ETA's rate is measured over."""
_LATENCY_BINS = 12


class Dashboard:
    """Serves the live page of ``scheduler`` until the ``async with`` block ends.

    ``port=0`` takes a free port (``url`` says which). Only 127.0.0.1 is ever
    bound: the page shows prompts and files, so it is not for the network.
    ``totals``: items per family the run will submit, for the ETA (default:
    the jobs the scheduler knows about)."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        port: int = 0,
        totals: dict[Family, int] | None = None,
        interval: float = 0.5,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"dashboard port {port}: must be 0..65535")
        self._scheduler = scheduler
        self._port = port
        self._totals = dict(totals or {})
        self._interval = interval
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._latencies: dict[str, list[float]] = {str(f): [] for f in Family}
        self._finished: deque[Job] = deque(maxlen=1000)
        self._newest: deque[dict[str, Any]] = deque(maxlen=NEWEST)
        self._completions: dict[str, deque[float]] = {str(f): deque() for f in Family}
        self._started = time.time()
        self._snapshot: dict[str, Any] = {}
        self._changed = anyio.Event()
        self._runner: web.AppRunner | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._remove_listener: Any = None
        self._closing = False
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/events", self._events)
        app.router.add_get("/snapshot", self._snapshot_json)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno,
                f"dashboard: cannot listen on 127.0.0.1:{self._port}: {exc.strerror or exc}",
            ) from exc
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        self._remove_listener = self._scheduler.add_listener(self._on_event)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._sample()
        self._tg.start_soon(self._sample_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
        try:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(None, None, None)
            # The last numbers, marked final: the page stops listening instead of
            # reconnecting to a server that is gone.
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await self._sample(final=True)
                except Exception:  # a limiter already closed: the page keeps what it had
                    logger.debug("dashboard: no final sample", exc_info=True)
                    self._snapshot = {**self._snapshot, "finished": True}
        finally:
            self._closing = True
            self._changed.set()  # open event streams end now, not at the server's timeout
            with anyio.CancelScope(shield=True):
                if self._runner is not None:
                    await self._runner.cleanup()

    def snapshot(self) -> dict[str, Any]:
        """What the page shows now (the last sample), as plain data."""
        return self._snapshot

    # -- collecting ----------------------------------------------------------------

    def _on_event(self, event: JobEvent) -> None:
        if event.new is JobState.COMPLETED or event.new is JobState.FAILED:
            # Held now: a job that ended may leave the scheduler's table before the
            # next sample. Its result is set just after this event; read it then.
            job = self._scheduler.get(event.key)
            if job is not None:
                self._finished.append(job)

    async def _sample_loop(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            await self._sample()

    async def _sample(self, *, final: bool = False) -> None:
        scheduler = self._scheduler
        now = time.time()
        while self._finished:
            await self._take_finished(self._finished.popleft(), now)
        counters = scheduler.counters()
        stats = await scheduler.limiter.statistics()
        families: dict[str, Any] = {}
        remaining = 0
        elapsed = min(ETA_WINDOW, now - self._started)
        etas: list[float | None] = []
        for family, counts in counters.families.items():
            stat = stats.get(family)
            stages = {
                "queued": counts.pending + counts.waiting + counts.queued,
                "creating": counts.creating,
                "dreaming": counts.submitted,
                "downloading": counts.downloading,
                "done": counts.completed,
                "failed": counts.failed + counts.cancelled,
            }
            known = sum(stages.values())
            total = max(known, self._totals.get(family, 0))
            left = total - stages["done"] - stages["failed"]
            remaining += left
            # Each family at its own recent pace: images finishing fast say
            # nothing about when the last video will.
            recent = self._completions[str(family)]
            while recent and recent[0] < now - ETA_WINDOW:
                recent.popleft()
            rate = len(recent) / elapsed if elapsed > 0 else 0.0
            if left:
                etas.append(left / rate if rate > 0 else None)
            families[str(family)] = {
                **stages,
                "total": total,
                "held": stat.held if stat else 0,
                "cap": stat.concurrency_limit if stat else 0,
                "effective_cap": stat.effective_concurrency if stat else 0,
                "window_used": stat.window_used if stat else 0,
                "window_limit": stat.window_limit if stat else 0,
                "effective_window_limit": stat.effective_window_limit if stat else 0,
                "rate_limited": stat.rate_limited if stat else 0,
                "backoff_seconds": round(stat.penalty_remaining, 1) if stat else 0.0,
                "latency": _distribution(self._latencies[str(family)]),
            }
        done_recently = sum(len(recent) for recent in self._completions.values())
        eta = None if None in etas or not etas else max(e for e in etas if e is not None)
        self._history.append(
            {
                "t": round(now - self._started, 2),
                **{
                    f"{name}_{what}": data[what]
                    for name, data in families.items()
                    for what in ("held", "window_used")
                },
            }
        )
        self._snapshot = {
            "elapsed": round(now - self._started, 1),
            "families": families,
            "creates": counters.creates,
            "rate_limited": counters.rate_limited,
            "polls": counters.polls,
            "downloads": counters.downloads,
            "bytes": counters.bytes_downloaded,
            "remaining": remaining,
            "eta_seconds": None if eta is None else round(eta, 1),
            "per_minute": round(done_recently / elapsed * 60, 1) if elapsed > 0 else 0.0,
            "history": list(self._history),
            "newest": list(self._newest),
            "finished": final,
        }
        self._changed.set()
        self._changed = anyio.Event()

    async def _take_finished(self, job: Job, now: float) -> None:
        key = job.key
        if not job.done:
            return
        if job.error is not None:
            self._newest.appendleft({"id": key, "state": "failed", "thumb": None})
            return
        result = await job.result()
        self._completions[str(job.family)].append(now)
        timings = job.timings
        if timings.created is not None and timings.completed is not None:
            self._latencies[str(job.family)].append(timings.completed - timings.created)
        # Inline, made once: the page never asks for a file, so it can show the
        # last results even after the run (and this server) ended.
        thumb = None
        if result.path is not None:
            thumb = await anyio.to_thread.run_sync(inline_thumbnail, Path(result.path))
        self._newest.appendleft({"id": key, "state": "completed", "thumb": thumb})

    # -- serving -------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        page = resources.files("lumasched.gallery").joinpath("static", "dashboard.html")
        return web.Response(text=page.read_text("utf-8"), content_type="text/html")

    async def _snapshot_json(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            while True:
                data = json.dumps(self._snapshot, separators=(",", ":"))
                await response.write(f"data: {data}\n\n".encode())
                if self._closing or self._snapshot.get("finished"):
                    break
                await self._changed.wait()
        except ConnectionResetError:
            pass  # the page was closed
        return response


def _distribution(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50": None, "p90": None, "max": None, "bins": [], "width": 0}
    ordered = sorted(values)
    top = ordered[-1] or 1.0
    width = top / _LATENCY_BINS
    bins = [0] * _LATENCY_BINS
    for value in ordered:
        bins[min(_LATENCY_BINS - 1, int(value / width))] += 1
    return {
        "count": len(ordered),
        "p50": round(ordered[len(ordered) // 2], 2),
        "p90": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 2),
        "max": round(top, 2),
        "bins": bins,
        "width": round(width, 3),
    }
