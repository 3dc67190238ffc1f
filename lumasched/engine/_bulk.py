"""Feeding many requests to a scheduler lazily: ``as_completed`` and ``map``.

The input is read only while fewer than ``limit`` of the jobs submitted from
it are unfinished, so it may be endless, huge, or produced as results come
in; memory stays bounded by ``limit``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Protocol

import anyio

from lumasched.api import CreateRequest
from lumasched.engine.jobs import Job, JobResult
from lumasched.errors import LumaError

__all__ = ["Item", "as_completed", "in_order"]

Item = CreateRequest | tuple[str, CreateRequest]
"""A request, or a ``(key, request)`` pair."""


class Submit(Protocol):
    def __call__(self, request: CreateRequest, *, key: str | None = ...) -> Job: ...


async def as_completed(
    submit: Submit, items: Iterable[Item] | AsyncIterable[Item], limit: int
) -> AsyncIterator[Job]:
    """Submit ``items`` and yield each job as it finishes."""
    pull = _puller(items)
    send, receive = anyio.create_memory_object_stream[Job](float("inf"))
    unfinished: set[Job] = set()
    exhausted = False

    def deliver(job: Job) -> None:
        # A job may finish after this generator has ended (it was cancelled,
        # or the consumer left): then there is no one to tell.
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            send.send_nowait(job)

    try:
        with send, receive:
            while True:
                while not exhausted and len(unfinished) < limit:
                    try:
                        item = await pull()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    job = _submit(submit, item)
                    unfinished.add(job)
                    job._add_done_callback(deliver)
                if not unfinished:
                    return
                job = await receive.receive()
                unfinished.discard(job)
                yield job
    finally:
        for job in unfinished:
            job._remove_done_callback(deliver)


async def in_order(
    submit: Submit,
    items: Iterable[Item] | AsyncIterable[Item],
    limit: int,
    *,
    return_exceptions: bool,
) -> AsyncIterator[JobResult | LumaError]:
    """Submit ``items`` and yield their results in input order."""
    pull = _puller(items)
    window: deque[Job] = deque()
    exhausted = False
    while True:
        while not exhausted and len(window) < limit:
            try:
                window.append(_submit(submit, await pull()))
            except StopAsyncIteration:
                exhausted = True
        if not window:
            return
        job = window.popleft()
        try:
            result = await job.result()
        except LumaError as exc:
            if not return_exceptions:
                raise
            yield exc
        else:
            yield result


def _submit(submit: Submit, item: Item) -> Job:
    if isinstance(item, tuple):
        key, request = item
        return submit(request, key=key)
    return submit(item)


def _puller(items: Iterable[Item] | AsyncIterable[Item]) -> Callable[[], Awaitable[Item]]:
    if isinstance(items, AsyncIterable):
        return aiter(items).__anext__
    iterator = iter(items)

    async def pull() -> Item:
        try:
            return next(iterator)
        except StopIteration:
            raise StopAsyncIteration from None

    return pull
