"""Job events as Server-Sent Events: the bytes a page's ``EventSource`` reads.

Each message is ``event: job`` with one JSON object (``key``, ``state``,
``old``, ``family``, ``generation_id``, ``at``; at the end ``path`` or
``error``). A stream for one key starts with the job's current state and ends
after its terminal state; a stream of every job runs until the client leaves.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

import anyio

from lumasched.engine.jobs import TERMINAL_STATES, Job, JobEvent
from lumasched.facade import Luma

__all__ = ["DEFAULT_HEARTBEAT", "SSE_HEADERS", "job_snapshot", "sse_stream"]

DEFAULT_HEARTBEAT = 15.0
"""Seconds of silence before a comment line is sent: keeps proxies from closing
the stream and notices a client that has gone."""

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event through at once
}


def job_snapshot(job: Job) -> dict[str, Any]:
    """What a page needs to draw ``job`` now."""
    data: dict[str, Any] = {
        "key": job.key,
        "state": job.state.value,
        "family": job.family.value,
        "generation_id": job.generation_id,
    }
    if job.done():
        result = job._result  # read without awaiting: the job is done
        if result is not None:
            data["path"] = result.path
            data["sha256"] = result.sha256
        if job.error is not None:
            data["error"] = str(job.error)
    return data


def _message(data: dict[str, Any]) -> bytes:
    return f"event: job\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _event_data(event: JobEvent) -> dict[str, Any]:
    return {
        "key": event.key,
        "state": event.new.value,
        "old": event.old.value,
        "family": event.family.value,
        "generation_id": event.generation_id,
        "at": event.at,
    }


async def sse_stream(
    luma: Luma,
    key: str | None = None,
    *,
    heartbeat: float = DEFAULT_HEARTBEAT,
    buffer: int = 256,
) -> AsyncGenerator[bytes, None]:
    """SSE messages for the job ``key`` (from its current state to its end), or
    for every job when ``key`` is None. Raises ``KeyError`` at once for a key
    neither the session nor the journal knows (answer 404)."""
    job = luma.get(key) if key is not None else None
    if key is not None and job is None:
        raise KeyError(key)
    with luma.subscribe(buffer) as events:
        if job is not None:
            yield _message(job_snapshot(job))
            if job.done():
                return
        while True:
            event: JobEvent | None = None
            with anyio.move_on_after(heartbeat):
                try:
                    event = await events.receive()
                except anyio.EndOfStream:
                    return  # the scheduler closed
            if event is None:
                # A lagging subscriber may have lost the end: look at the job itself.
                if job is not None and job.done():
                    yield _message(job_snapshot(job))
                    return
                yield b": ping\n\n"
                continue
            if key is not None and event.key != key:
                continue
            data = _event_data(event)
            if job is not None and event.new in TERMINAL_STATES:
                # The state is published a moment before the result is set on the job.
                with anyio.move_on_after(heartbeat), contextlib.suppress(Exception):
                    await job.result()
                data.update(job_snapshot(job))
                yield _message(data)
                return
            yield _message(data)
