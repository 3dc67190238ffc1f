"""Glue between the benchmarks and lumasched: run one batch through the real engine.

Every function here runs inside a measurement child (``benchmarks._child``),
against an emulator in another process, and returns plain JSON-able figures.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.manifest_gen import item
from lumasched.api import CreateRequest, request_from_dict
from lumasched.limits import Limits, make_limiter


def request_for(index: int, kind: str) -> CreateRequest:
    data = item(index, kind)
    data.pop("id")
    data.pop("type")
    return request_from_dict(kind, data)


def requests(jobs: int, kind: str, *, offset: int = 0) -> Iterator[tuple[str, CreateRequest]]:
    for index in range(offset, offset + jobs):
        yield f"item-{index:07d}", request_for(index, kind)


async def run_batch(
    base_url: str,
    api_key: str,
    *,
    jobs: int,
    kind: str = "video",
    limits: dict[str, Any] | None = None,
    out_dir: str | None = None,
    journal: str | None = None,
    callbacks: bool = False,
    redis_url: str | None = None,
    offset: int = 0,
    max_pending: int | None = None,
    start_at: float | None = None,
    window_margin: float | None = None,
) -> dict[str, Any]:
    """Run ``jobs`` generations through a Scheduler; returns timings and counters.

    ``makespan`` runs from the first submit to the last job seen finished.
    ``start_at`` (a ``time.time()``) lets several processes start together.
    """
    from lumasched.api import LumaClient
    from lumasched.engine.poller import Poller
    from lumasched.engine.scheduler import Scheduler
    from lumasched.store.journal import Journal

    limit_obj = Limits.from_mapping(limits or {})
    margin = {} if window_margin is None else {"window_margin": window_margin}
    limiter = make_limiter(limit_obj, redis_url=redis_url, api_key=api_key, **margin)
    finished_at: list[float] = []
    failed = 0
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(LumaClient(api_key=api_key, base_url=base_url))
        await stack.enter_async_context(limiter)
        poller = Poller(client)
        callback_url = None
        if callbacks:
            from lumasched.engine.callbacks import CallbackReceiver

            receiver = await stack.enter_async_context(CallbackReceiver(poller.hint))
            callback_url = receiver.callback_url
        jnl = None if journal is None else stack.enter_context(_journal(Journal, journal))
        scheduler = await stack.enter_async_context(
            Scheduler(
                client,
                limiter=limiter,
                poller=poller,
                journal=jnl,
                out_dir=out_dir,
                callback_url=callback_url,
            )
        )
        if start_at is not None:
            import anyio

            await anyio.sleep(max(0.0, start_at - time.time()))
        t0 = time.perf_counter()
        async for job in scheduler.as_completed(
            requests(jobs, kind, offset=offset), max_pending=max_pending
        ):
            finished_at.append(time.perf_counter() - t0)
            if job.error is not None:
                failed += 1
        wall = time.perf_counter() - t0
        counters = scheduler.counters()
        poller_stats = poller.stats()
    return {
        "jobs": jobs,
        "failed": failed,
        "makespan": max(finished_at, default=0.0),
        "wall": wall,
        "creates": counters.creates,
        "rate_limited": counters.rate_limited,
        "polls": counters.polls,
        "gets": poller_stats.gets,
        "lists": poller_stats.lists,
        "hints": poller_stats.hints,
        "downloads": counters.downloads,
        "bytes": counters.bytes_downloaded,
        "client_stats": _jsonable(getattr(client, "stats", None)),
    }


@contextlib.contextmanager
def _journal(cls: Any, path: str) -> Iterator[Any]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    jnl = cls(path)
    try:
        yield jnl
    finally:
        close = getattr(jnl, "close", None)
        if close is not None:
            close()


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    try:
        import attrs

        if attrs.has(type(value)):
            value = attrs.asdict(value)
    except Exception:
        return repr(value)
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value
