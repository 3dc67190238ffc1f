"""``Luma``: the one object for the common case.

It owns the client, the limiter, the journal and the scheduler, configured from
the environment (``LUMAAI_API_KEY``, ``LUMAAI_BASE_URL``, ``LUMASCHED_REDIS_URL``)
with safe defaults: a journal in ``out_dir``, so the same code run twice never
pays twice, and a shutdown that hands what is in flight to that journal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, Self

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from lumasched._config import Settings
from lumasched.api import CreateRequest, LumaClient, RetryPolicy, request_from_dict
from lumasched.engine._digest import request_digest
from lumasched.engine.callbacks import CallbackInbox
from lumasched.engine.events import Listener
from lumasched.engine.jobs import Job, JobEvent, JobResult, JobState
from lumasched.engine.scheduler import Scheduler
from lumasched.limits import BUILD_TIER, Limiter, Limits, make_limiter
from lumasched.store.journal import Journal
from lumasched.store.retention import prune_out_dir

__all__ = ["DEFAULT_OUT_DIR", "JOURNAL_NAME", "ExitPolicy", "Luma"]

logger = logging.getLogger("lumasched.facade")

DEFAULT_OUT_DIR = "out"
JOURNAL_NAME = "journal.sqlite"

ExitPolicy = Literal["defer", "wait"]
"""What leaving ``async with Luma`` does with unfinished jobs: ``"defer"`` stops
creating and hands every unfinished job to the journal (the next ``Luma`` on the
folder picks them up); ``"wait"`` waits for every one of them to end."""

_KEY_DIGEST_CHARS = 20


class Luma:
    """Generate images and videos into ``out_dir``, within the account's limits.

    ::

        async with lumasched.Luma(out_dir="out") as luma:
            result = await luma.generate(lumasched.ImageRequest("a fox in the snow"))
            print(result.path)

    Arguments:
        out_dir: where each finished asset is written (``<key>.<ext>``), and the
            journal (``journal.sqlite``) unless ``journal`` says otherwise.
        api_key, base_url: default to ``LUMAAI_API_KEY`` and ``LUMAAI_BASE_URL``.
        journal: the journal's path; ``False`` for none (then nothing protects a
            rerun from creating the same generations again).
        limits: the account's limits (the Build tier by default).
        redis_url: share the limits with every process using the key, through
            Redis (default ``LUMASCHED_REDIS_URL``; none: in this process only).
        callback_base_url: the public URL where the app mounts
            ``lumasched.web``'s callback route; requests then carry
            ``callback_url`` and each verified callback hints the poller.
        on_exit: ``"defer"`` (default) or ``"wait"``: see ``ExitPolicy``.
        retry: the client's ``RetryPolicy`` for API requests.
        scheduler_options: passed to ``Scheduler`` (``job_timeout``,
            ``budget_cents`` with ``cost_of``, ``max_asset_size``, ...).

    A request submitted without ``key`` gets one from its content
    (``key_for``): the same request submitted again, in this session or a later
    one, is the same job, answered from the journal instead of created again.
    Give distinct keys for several takes of one prompt.

    On entering, every unfinished job of the journal is picked up where it had
    got to (created generations are polled, never created again). On leaving
    (with ``on_exit="defer"``), nothing more is created, and every job not yet
    finished stays in the journal for the next ``Luma`` on the folder. An
    exception raised in the block leaves it as itself.
    """

    def __init__(
        self,
        out_dir: str | Path = DEFAULT_OUT_DIR,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        journal: str | Path | Literal[False] | None = None,
        limits: Limits = BUILD_TIER,
        redis_url: str | None = None,
        callback_base_url: str | None = None,
        on_exit: ExitPolicy = "defer",
        retry: RetryPolicy | None = None,
        **scheduler_options: Any,
    ) -> None:
        if on_exit not in ("defer", "wait"):
            raise ValueError(f"on_exit must be 'defer' or 'wait', got {on_exit!r}")
        settings = Settings.from_env(api_key=api_key, base_url=base_url, redis_url=redis_url)
        self.out_dir = Path(out_dir)
        self.journal_path: Path | None = None
        if journal is None:
            self.journal_path = self.out_dir / JOURNAL_NAME
        elif journal is not False:
            self.journal_path = Path(journal)
        # Raises ConfigurationError now, naming the variable, when there is no key.
        self._client = LumaClient(settings=settings, retry=retry)
        self._limits = limits
        self._redis_url = settings.redis_url
        self._api_key = settings.api_key
        self._on_exit: ExitPolicy = on_exit
        self._options = scheduler_options
        self._scheduler: Scheduler | None = None
        self._journal: Journal | None = None
        self._limiter: Limiter | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None
        self._entered = False
        self.callbacks: CallbackInbox | None = None
        self.callback_url: str | None = None
        if callback_base_url is not None:
            self.callbacks = CallbackInbox(self._hint)
            self.callback_url = self.callbacks.url(callback_base_url)

    def __repr__(self) -> str:
        state = "open" if self._scheduler is not None else "closed"
        return f"<Luma out_dir={str(self.out_dir)!r} {state}>"

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Luma can be entered only once; create a new one")
        self._entered = True
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._stop = anyio.Event()
        # The client, the limiter and the scheduler live in a task of their own,
        # which enters and leaves their task groups: so this object may be left
        # from another task than the one that entered it (pytest-asyncio fixtures,
        # aiohttp's cleanup hooks), and the caller's code is never cancelled by it.
        self._runner = loop.create_task(self._run(ready), name=f"lumasched.Luma {self.out_dir}")
        try:
            await ready
        except BaseException:
            self._runner.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([self._runner])
            raise
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        runner, stop = self._runner, self._stop
        if runner is None or stop is None:
            return
        if exc_type is not None:
            self._on_exit = "defer"  # leaving with an error: stop at once
        stop.set()
        with anyio.CancelScope(shield=True):
            try:
                await runner
            except BaseException:
                if exc is None:
                    raise
                # The caller's own exception is what leaves the block; ours is logged.
                logger.exception("error while closing %r", self)

    async def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._stop is not None
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self._client)
                limiter = make_limiter(
                    self._limits, redis_url=self._redis_url, api_key=self._api_key
                )
                self._limiter = await stack.enter_async_context(limiter)
                if self.journal_path is not None:
                    self._journal = stack.enter_context(Journal(self.journal_path))
                scheduler = Scheduler(
                    self._client,
                    limiter=self._limiter,
                    journal=self._journal,
                    out_dir=self.out_dir,
                    callback_url=self.callback_url,
                    **self._options,
                )
                self._scheduler = await stack.enter_async_context(scheduler)
                self._resume()
                ready.set_result(None)
                await self._stop.wait()
                if self._on_exit == "defer":
                    await scheduler.shutdown(wait=False)
        except BaseException as exc:
            if ready.done():
                raise
            if isinstance(exc, asyncio.CancelledError):
                ready.cancel()
            else:
                ready.set_exception(exc)
        finally:
            self._scheduler = None

    def _resume(self) -> None:
        """Pick up the journal's unfinished jobs. Ended ones stay where they are
        (their files are not checked again: ``prune`` may have removed them on
        purpose; submitting such a key again downloads it again)."""
        if self._journal is None:
            return
        scheduler = self.scheduler
        picked = 0
        for record in self._journal.records():
            if record.finished or scheduler.get(record.key) is not None:
                continue
            request = request_from_dict(record.kind, record.request)
            scheduler.submit(request, key=record.key, priority=record.priority)
            picked += 1
        if picked:
            logger.info("picked up %d unfinished jobs from %s", picked, self.journal_path)

    def _hint(self, generation_id: str) -> None:
        if self._scheduler is not None:
            self._scheduler.poller.hint(generation_id)

    @property
    def scheduler(self) -> Scheduler:
        """The ``Scheduler`` underneath, for everything this object does not wrap."""
        if self._scheduler is None:
            raise RuntimeError(
                "Luma is closed" if self._entered else "use Luma inside 'async with Luma(...)'"
            )
        return self._scheduler

    @property
    def client(self) -> LumaClient:
        return self._client

    @property
    def journal(self) -> Journal | None:
        return self._journal

    @property
    def limiter(self) -> Limiter:
        if self._limiter is None:
            raise RuntimeError("use Luma inside 'async with Luma(...)'")
        return self._limiter

    # -- generating ----------------------------------------------------------------

    @staticmethod
    def key_for(request: CreateRequest) -> str:
        """The key a request gets when submitted without one: its kind and a digest
        of its content, so the same request is the same job."""
        return f"{request.kind}-{request_digest(request)[:_KEY_DIGEST_CHARS]}"

    def submit(
        self,
        request: CreateRequest,
        *,
        key: str | None = None,
        priority: int = 0,
        depends_on: Iterable[Job | str] = (),
    ) -> Job:
        """Schedule ``request`` and return its ``Job`` at once; an invalid request
        raises ``ValidationError`` here. See ``Scheduler.submit``."""
        request.validate()
        return self.scheduler.submit(
            request,
            key=self.key_for(request) if key is None else key,
            priority=priority,
            depends_on=depends_on,
        )

    async def generate(
        self,
        request: CreateRequest,
        *,
        key: str | None = None,
        priority: int = 0,
        depends_on: Iterable[Job | str] = (),
    ) -> JobResult:
        """Submit ``request`` and wait for its file; raises its error on failure
        (``GenerationFailed``, ``ValidationError``, ...)."""
        return await self.submit(request, key=key, priority=priority, depends_on=depends_on)

    @staticmethod
    def ref(job: Job | str) -> str:
        """A generation id standing for ``job``'s generation (see ``Scheduler.ref``)."""
        return Scheduler.ref(job)

    # -- status and events ------------------------------------------------------------

    def get(self, key: str) -> Job | None:
        """The job ``key`` (also one that ended in an earlier session), or None."""
        return self.scheduler.get(key)

    def status(self, key: str) -> JobState | None:
        """The state of the job ``key``, or None if neither session nor journal knows it."""
        job = self.get(key)
        return None if job is None else job.state

    def subscribe(self, buffer: int | None = None) -> MemoryObjectReceiveStream[JobEvent]:
        """A stream of every job event from now on (``async with`` / ``async for``)."""
        return self.scheduler.subscribe(buffer)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` on every job event; returns a remover."""
        return self.scheduler.add_listener(listener)

    # -- the output folder ---------------------------------------------------------------

    def prune(
        self,
        *,
        max_age: float | None = None,
        max_files: int | None = None,
        keep: Iterable[str] = (),
    ) -> list[Path]:
        """Delete assets in ``out_dir`` older than ``max_age`` seconds, then the
        oldest beyond ``max_files`` (see ``lumasched.store.retention``). Files of
        unfinished jobs are kept."""
        busy = {
            job.key
            for job in (self._scheduler.jobs() if self._scheduler is not None else [])
            if not job.done()
        }
        protected = set(keep)
        if busy:
            protected.update(path.name for path in self.out_dir.glob("*") if path.stem in busy)
        return prune_out_dir(self.out_dir, max_age=max_age, max_files=max_files, keep=protected)
