"""``LumaSync``: ``Luma`` for code that cannot await.

The engine runs on its own event loop in a background thread, so it works from
a plain script and equally from inside a running loop (Jupyter, IPython, a sync
web framework's worker), where ``asyncio.run`` raises ``RuntimeError``. Calls
block the calling thread only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Self, TypeVar

from lumasched.api import CreateRequest
from lumasched.engine.jobs import JobResult, JobState
from lumasched.facade._luma import DEFAULT_OUT_DIR, Luma

__all__ = ["LumaSync", "generate_sync"]

T = TypeVar("T")


class LumaSync:
    """A ``Luma`` driven from synchronous code; a context manager (or ``close()``).

    ::

        with lumasched.LumaSync(out_dir="out") as luma:
            result = luma.generate(lumasched.ImageRequest("a fox in the snow"))
            future = luma.submit(lumasched.VideoRequest("a teddy bear"), key="bear")
            print(result.path, future.result().path)

    Takes the arguments of ``Luma``. ``submit`` returns a
    ``concurrent.futures.Future`` of the ``JobResult``.
    """

    def __init__(self, out_dir: str | Path = DEFAULT_OUT_DIR, **options: Any) -> None:
        self._out_dir = out_dir
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._luma: Luma | None = None
        self._stop: asyncio.Event | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self._luma is not None else "closed"
        return f"<LumaSync out_dir={str(self._out_dir)!r} {state}>"

    def open(self) -> Self:
        """Start the engine thread and wait until ``Luma`` is entered (its errors,
        such as a missing API key or a journal in use, are raised here)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("a LumaSync can be opened only once; create a new one")
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="lumasched-engine", daemon=True
            )
            self._thread.start()
        ready.result()
        return self

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave ``Luma`` (its ``on_exit`` policy applies) and end the thread."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        if not self._stopped.done():
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._stopped.result()  # an error on leaving (e.g. the disk refused the journal)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready, loop))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not self._stopped.done():
                self._stopped.set_exception(exc)
        else:
            if not self._stopped.done():
                self._stopped.set_result(None)
        finally:
            self._luma = None
            loop.close()

    async def _main(
        self, ready: concurrent.futures.Future[None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._stop = asyncio.Event()
        async with Luma(self._out_dir, **self._options) as luma:
            self._luma = luma
            self._loop = loop
            ready.set_result(None)
            await self._stop.wait()

    def _call(self, fn: Callable[[Luma], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        loop, luma = self._loop, self._luma
        if loop is None or luma is None or self._stopped.done():
            raise RuntimeError("use LumaSync inside 'with LumaSync(...)' (or after open())")
        return asyncio.run_coroutine_threadsafe(fn(luma), loop)

    def submit(
        self,
        request: CreateRequest,
        *,
        key: str | None = None,
        priority: int = 0,
        depends_on: Iterable[str] = (),
    ) -> concurrent.futures.Future[JobResult]:
        """Schedule ``request``; returns a future of its ``JobResult``. An invalid
        request raises ``ValidationError`` here."""

        async def submit(luma: Luma) -> concurrent.futures.Future[JobResult]:
            job = luma.submit(request, key=key, priority=priority, depends_on=depends_on)
            return asyncio.run_coroutine_threadsafe(job.result(), asyncio.get_running_loop())

        return self._call(submit).result()

    def generate(
        self,
        request: CreateRequest,
        *,
        key: str | None = None,
        priority: int = 0,
        depends_on: Iterable[str] = (),
        timeout: float | None = None,
    ) -> JobResult:
        """Submit ``request`` and block until its file is written (or ``timeout``
        seconds pass: ``TimeoutError``; the job carries on)."""
        future = self.submit(request, key=key, priority=priority, depends_on=depends_on)
        return future.result(timeout)

    def status(self, key: str) -> JobState | None:
        """The state of the job ``key``, or None."""

        async def status(luma: Luma) -> JobState | None:
            return luma.status(key)

        return self._call(status).result()

    def prune(self, *, max_age: float | None = None, max_files: int | None = None) -> list[Path]:
        """``Luma.prune`` on the engine's thread."""

        async def prune(luma: Luma) -> list[Path]:
            return luma.prune(max_age=max_age, max_files=max_files)

        return self._call(prune).result()


def generate_sync(
    request: CreateRequest,
    *,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    key: str | None = None,
    timeout: float | None = None,
    **options: Any,
) -> JobResult:
    """One call, one file: ``generate_sync(ImageRequest("a fox")).path``.

    Blocks until the asset is in ``out_dir``; works in scripts and notebooks
    alike. Run twice, the second call is answered from the journal in
    ``out_dir`` and creates nothing. ``options`` go to ``Luma``.
    """
    with LumaSync(out_dir, **options) as luma:
        return luma.generate(request, key=key, timeout=timeout)
