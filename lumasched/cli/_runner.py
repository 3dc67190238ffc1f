"""``lumasched run``: a checked manifest driven through the scheduler to files.

No printing here: everything the user sees goes through a ``Display``
(``_progress``). The manifest is read lazily a second time (it was checked
already) and fed to ``Scheduler.as_completed`` with bounded buffering, keyed by
item id so the journal resumes a rerun. Ctrl-C (or SIGTERM, what systemd,
Docker and Kubernetes send) once: no new creates, wait for what is in flight;
a second signal: stop at once (the scheduler leaves the journal consistent and
the next run picks everything up). A journal or results file the disk refuses
to write stops the run at once too (``RunOutcome.storage_error``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
import attrs

from lumasched._config import Settings
from lumasched.api import CreateRequest, Family
from lumasched.cli._observe import observe_run
from lumasched.cli._outcomes import failure_reason, result_line
from lumasched.cli._uploads import UploadOptions, open_uploads, size
from lumasched.engine._reachability import DEFAULT_UNREACHABLE_GIVE_UP
from lumasched.engine.events import Counters
from lumasched.engine.jobs import Job, JobDeferred, JobResult
from lumasched.errors import (
    APIUnreachableError,
    AuthenticationError,
    ConfigurationError,
    ItemsChangedError,
    LumaError,
    PermissionDeniedError,
    StorageError,
)
from lumasched.limits import Limits, make_limiter
from lumasched.manifest import Manifest
from lumasched.manifest._changes import Review, review
from lumasched.pricing import PriceTable, estimate_cost_cents
from lumasched.store._ownership import FOLDER, OwnerLock
from lumasched.store._storage import first_storage_error
from lumasched.store.journal import Journal
from lumasched.store.results import ResultsWriter

__all__ = ["Display", "RunOptions", "RunOutcome", "run_batch"]

_EMULATOR_CREDITS = 1e12
_EMULATOR_KEY = "lm-emulator"
EMULATOR_STATE_NAME = "emulator-state.sqlite"
"""With ``--emulator``: the emulator's generations, next to the journal, so a
rerun resumes against them as it would against the real API."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _HardStop(Exception):
    """A second Ctrl-C (or SIGTERM): leave the scheduler at once."""


@attrs.frozen
class RunOptions:
    manifest: Manifest
    out_dir: Path
    journal_path: Path
    results_path: Path
    limits: Limits
    settings: Settings
    emulator: bool = False
    emulator_speed: float = 100.0
    callback_url: str | None = None
    budget_cents: float | None = None
    prices: PriceTable | None = None
    total: int = 0
    claim_ttl: float | None = None
    """With Redis: seconds a stopped host's item claims and slots stay taken."""
    batch_name: str | None = None
    """With Redis: ``--batch NAME``, the batch's identity instead of its content."""
    reconcile_settle: float | None = None
    redo_changed: bool = False
    """Create anew the items whose request changed since their generation was created."""
    retry_failed: bool = False
    """Create anew the items whose generation failed."""
    unreachable_give_up: float = DEFAULT_UNREACHABLE_GIVE_UP
    """Seconds the API may stay unreachable before the run stops creating."""
    metrics_port: int | None = None
    """Serve ``/metrics`` on 127.0.0.1:PORT for the run's life (0: any free port)."""
    metrics_linger: float = 0.0
    """Seconds ``/metrics`` stays up after the run, for a last scrape."""
    log_json: bool = False
    """Log every job state change as a JSON line (``--log-format json``)."""
    upload: UploadOptions | None = None
    """Where the manifest's local files go (``--upload``); the emulator's store
    with ``emulator``."""
    dashboard_port: int | None = None
    """``--dashboard``: serve the live page on 127.0.0.1 on this port (0: a free one)."""
    family_totals: dict[Family, int] = attrs.Factory(dict)
    """Items per family in the manifest (for the dashboard's ETA)."""


@attrs.define
class RunOutcome:
    """What a run did, for the summary and the exit status."""

    total: int
    completed: int = 0
    failed: list[tuple[str, str]] = attrs.Factory(list)
    """(item id, reason) of each failed item."""
    not_run: Counter[str] = attrs.Factory(Counter)
    """Items left for a later run, by reason (budget, stopped, shutdown)."""
    interrupted: bool = False
    signal: str | None = None
    """The first stop signal received (``SIGINT``, ``SIGTERM``), if any."""
    storage_error: str | None = None
    """Why the run stopped when the journal or results file could not be written."""
    elapsed: float = 0.0
    spent_cents: float = 0.0
    counters: Counters | None = None
    by_family: dict[Family, Counter[str]] = attrs.Factory(dict)
    """Per family: completed / failed / not run."""
    claims_wait: str | None = None
    """With Redis: items wait for a person (a gone host may have made them): the
    one-line account of which and how to resolve it (``EXIT_CLAIMS_WAIT``)."""
    latency: dict[Family, list[float]] = attrs.Factory(dict)
    """Per family: [sum of create-to-completed seconds, count]."""
    halted: LumaError | None = None
    """Why creating stopped for good in this run (a rejected key, an unreachable API)."""
    review: Review | None = None
    """What the journal held before the run (changed, failed, reset items)."""
    gallery: Path | None = None
    """``DIR/index.html``, once this run brought it up to date."""

    @property
    def not_run_total(self) -> int:
        return sum(self.not_run.values())


class Display(Protocol):
    """What the runner tells the user about (implemented in ``_progress``)."""

    def start(self, scheduler: Any, out_dir: Path) -> None: ...

    async def refresh_loop(self) -> None: ...

    def note(self, text: str) -> None: ...

    def item_done(self, job: Job, result: JobResult | None, reason: str | None) -> None: ...

    def stop(self) -> None: ...


def _cost_of(prices: PriceTable | None) -> Any:
    def cost(request: CreateRequest) -> float:
        try:
            return estimate_cost_cents(request.kind, request.to_body(), prices)
        except ValueError:
            return 0.0  # not priceable: --dry-run says so

    return cost


async def run_batch(options: RunOptions, display: Display) -> RunOutcome:
    """Run the manifest; returns the outcome (never raises for job failures).

    Raises ``JournalLockedError`` if another run holds the journal (or the output
    folder) and ``ItemsChangedError`` for items edited since they were created
    (without ``redo_changed``), before anything is sent."""

    started = time.monotonic()
    outcome = RunOutcome(total=options.total)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as owned:
        if options.journal_path.parent.resolve() != options.out_dir.resolve():
            # The journal lives elsewhere (--journal): the folder needs an owner too.
            folder = OwnerLock(options.out_dir / FOLDER, what="output folder")
            owned.callback(folder.release)
        # Refused at once (JournalLockedError) while another run holds it. SQLite
        # and the review's reads run in a worker thread: never on the event loop.
        journal = await anyio.to_thread.run_sync(
            partial(Journal, options.journal_path, batch=options.manifest.path.name)
        )
        owned.push_async_callback(anyio.to_thread.run_sync, journal.close)
        if await anyio.to_thread.run_sync(len, journal):  # a first run has nothing to compare
            found = outcome.review = await anyio.to_thread.run_sync(
                partial(
                    review,
                    options.manifest,
                    journal,
                    redo_changed=options.redo_changed,
                    retry_failed=options.retry_failed,
                    apply=True,
                    prices=options.prices,
                )
            )
            if found.changed and not options.redo_changed:
                raise ItemsChangedError(found.changed, cost_cents=found.changed_cents)
        await _run_owned(options, journal, display, outcome, started)
        if outcome.storage_error is None:
            await anyio.to_thread.run_sync(_write_gallery, options, journal, outcome, display)
    _quick_exit()
    return outcome


def _quick_exit() -> None:
    """Spare the interpreter's last garbage collection when the process exits.

    A run leaves hundreds of thousands of objects (its imports above all); the
    collection ``Py_Finalize`` makes of them took about 100 ms after the last
    file was on disk, paid by every ``lumasched run``. Frozen at exit (an atexit
    hook, so a process that goes on, a test session, is unaffected), they are
    freed as modules are torn down, without that scan. Everything the run
    writes is closed explicitly before this point: no finalizer is relied on.
    """
    global _exit_hooked
    if not _exit_hooked:
        _exit_hooked = True
        atexit.register(gc.freeze)


_exit_hooked = False


def _write_gallery(
    options: RunOptions, journal: Journal, outcome: RunOutcome, display: Display
) -> None:
    """``DIR/index.html`` brought up to date, with what the report needs from this
    run (the limits, the counters) kept in the journal for ``lumasched gallery``."""
    from lumasched.gallery import GALLERY_NAME, report_meta, write_gallery

    try:
        journal.set_meta("report", json.dumps(report_meta(options.limits, outcome.counters)))
        outcome.gallery = write_gallery(options.out_dir, journal_path=options.journal_path)
    except Exception as exc:  # the files are made; a page that fails must not fail the run
        display.note(f"{GALLERY_NAME} not written: {exc}")


async def _run_owned(
    options: RunOptions, journal: Journal, display: Display, outcome: RunOutcome, started: float
) -> RunOutcome:
    stopping = anyio.Event()
    driving = anyio.CancelScope()
    interrupts = 0

    def on_signal(signum: signal.Signals) -> None:
        nonlocal interrupts
        interrupts += 1
        outcome.interrupted = True
        if outcome.signal is None:
            outcome.signal = signum.name
        if interrupts == 1:
            stopping.set()
        else:
            what = "Ctrl-C" if signum is signal.SIGINT else signum.name
            display.note(f"second {what}: stopping now; the journal keeps every job for a rerun")
            driving.cancel()

    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await _run(options, journal, display, outcome, stopping, driving)
        except* _HardStop:
            pass
        except* StorageError as group:
            outcome.storage_error = str(first_storage_error(group))
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        display.stop()
        outcome.elapsed = time.monotonic() - started
    return outcome


async def _run(
    options: RunOptions,
    journal: Any,
    display: Display,
    outcome: RunOutcome,
    stopping: anyio.Event,
    driving: anyio.CancelScope,
) -> None:
    from lumasched.api import LumaClient
    from lumasched.engine.scheduler import DEFAULT_RECONCILE_SETTLE, Scheduler

    limits = options.limits
    settings = options.settings
    async with AsyncExitStack() as stack:
        emu = None
        if options.emulator:
            from lumasched.emulator import Emulator, EmulatorConfig

            emu = await stack.enter_async_context(
                Emulator(
                    EmulatorConfig(
                        limits=limits,
                        speed=options.emulator_speed,
                        # A practice run is never short of credits (--budget still applies).
                        credit_balance_cents=_EMULATOR_CREDITS,
                        state_path=options.journal_path.parent / EMULATOR_STATE_NAME,
                    )
                )
            )
            settings = attrs.evolve(settings, api_key=_EMULATOR_KEY, base_url=emu.base_url)
            display.note(f"emulator running at {emu.base_url}")
        client = await stack.enter_async_context(LumaClient(settings=settings))
        inputs = None
        files = options.manifest.input_files
        if files:
            inputs = await open_uploads(
                stack,
                options.upload,
                options.journal_path.parent,
                emulator=emu,
                emulator_key=_EMULATOR_KEY,
            )
            # Before the first create: a file that cannot be stored stops the run
            # with nothing sent, and no create waits on an upload.
            total = size(len(files), sum(f.size for f in files))
            display.note(f"local inputs: {total}: storing them in {inputs.target.name}")
            await inputs.prepare(files)
            stats = inputs.stats
            display.note(
                f"local inputs: {total}; uploaded {size(stats.uploaded, stats.uploaded_bytes)} "
                f"to {inputs.target.name}, {len(files) - stats.uploaded} already there"
            )
        ttl = {"lease_ttl": options.claim_ttl} if settings.redis_url and options.claim_ttl else {}
        limiter = make_limiter(
            limits, redis_url=settings.redis_url, api_key=settings.api_key, **ttl
        )
        await stack.enter_async_context(limiter)
        claims = None
        if settings.redis_url is not None and not options.emulator:
            claims = await stack.enter_async_context(
                await _claim_store(options, settings, journal, display)
            )
        scheduler = Scheduler(
            client,
            limiter=limiter,
            journal=journal,
            out_dir=options.out_dir,
            job_timeout=settings.job_timeout,
            max_asset_size=settings.max_asset_size,
            callback_url=options.callback_url,
            budget_cents=options.budget_cents,
            cost_of=_cost_of(options.prices) if options.budget_cents is not None else None,
            claims=claims,
            inputs=inputs,
            reconcile_settle=(
                # The in-process emulator's state file holds every create it
                # accepted before it stopped: nothing more can show up later.
                (0.0 if options.emulator else DEFAULT_RECONCILE_SETTLE)
                if options.reconcile_settle is None
                else options.reconcile_settle
            ),
            unreachable_give_up=options.unreachable_give_up,
        )
        metrics_url = await observe_run(
            stack,
            scheduler,
            settings,
            metrics_port=options.metrics_port,
            linger=options.metrics_linger,
            log_json=options.log_json,
            stopping=stopping,
        )
        if metrics_url is not None:
            display.note(f"metrics at {metrics_url}")
        review = outcome.review
        results = await anyio.to_thread.run_sync(
            partial(
                ResultsWriter,
                options.results_path,
                forget=review.reset if review is not None else (),
                manifest_ids=review.ids if review is not None else None,
            )
        )
        stack.push_async_callback(anyio.to_thread.run_sync, results.close)
        if options.dashboard_port is not None:
            # Before the scheduler starts: a port in use ends the run with nothing sent.
            await _open_dashboard(stack, options, scheduler, display)
        await stack.enter_async_context(scheduler)
        display.start(scheduler, options.out_dir)
        try:
            with driving:
                await _drive(
                    options, scheduler, results, display, outcome, stopping, claims, journal
                )
        finally:
            outcome.counters = scheduler.counters()
            outcome.spent_cents = scheduler.spent_cents
            outcome.halted = scheduler.halted
        if driving.cancelled_caught:
            # Leaving the scheduler with an exception stops it at once; what is
            # in flight stays in the journal for the next run.
            raise _HardStop


async def _open_dashboard(
    stack: AsyncExitStack, options: RunOptions, scheduler: Any, display: Display
) -> None:
    from lumasched.gallery import Dashboard

    dashboard = Dashboard(
        scheduler,
        port=options.dashboard_port or 0,
        totals=options.family_totals,
    )
    try:
        await stack.enter_async_context(dashboard)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigurationError(
            f"--dashboard {options.dashboard_port}: cannot listen on 127.0.0.1 ({reason}); "
            "nothing was sent"
        ) from exc
    display.note(f"dashboard: {dashboard.url}")


async def _claim_store(
    options: RunOptions, settings: Settings, journal: Any, display: Display
) -> Any:
    """Several hosts work the batch together (docs/multihost.md): the batch is
    known by its content (or ``--batch NAME``), this host by its ``--out``."""
    import socket

    from lumasched.claims import DEFAULT_CLAIM_TTL, ClaimStore, batch_id
    from lumasched.cli._multihost import site_of

    assert settings.redis_url is not None
    name = options.batch_name
    batch = await anyio.to_thread.run_sync(lambda: batch_id(options.manifest, name=name))
    remembered = await anyio.to_thread.run_sync(_remembered, journal, batch)
    await anyio.to_thread.run_sync(journal.set_meta, "claims_batch", batch)

    def on_join(epoch: str, sites: dict[str, str]) -> None:
        # Rare (joining, a new host): a small write, so that the next run here
        # notices a state Redis lost while no process of this site ran.
        journal.set_meta("claims_epoch", epoch)
        journal.set_meta("claims_sites", json.dumps(sites, sort_keys=True))

    what = f"named {name!r}" if name else f"by the content of {options.manifest.path.name}"
    display.note(f"batch {batch} ({what}): shared with other hosts through Redis")
    host = socket.gethostname()
    site, label = site_of(host, options.out_dir)
    return ClaimStore(
        settings.redis_url,
        api_key=settings.api_key,
        manifest=batch,
        ttl=options.claim_ttl or DEFAULT_CLAIM_TTL,
        host=host,
        site=site,
        site_label=label,
        on_event=display.note,
        remembered=remembered,
        on_join=on_join,
    )


def _remembered(journal: Any, batch: str) -> tuple[str | None, dict[str, str]]:
    """The claims epoch and sites the last run of this journal knew, for ``batch``."""
    if journal.meta("claims_batch") != batch:
        return None, {}
    sites = json.loads(journal.meta("claims_sites") or "{}")
    return journal.meta("claims_epoch"), sites if isinstance(sites, dict) else {}


async def _drive(
    options: RunOptions,
    scheduler: Any,
    results: ResultsWriter,
    display: Display,
    outcome: RunOutcome,
    stopping: anyio.Event,
    claims: Any = None,
    journal: Any = None,
) -> None:
    from lumasched.engine.scheduler import Scheduler

    limits = options.limits
    window = max(256, 4 * (limits.video.concurrency + limits.image.concurrency))
    claimed = None
    if claims is not None:
        from lumasched.cli._multihost import ClaimedRun

        # Claim items only a little ahead of the slots, so hosts share the work.
        window = max(8, 2 * (limits.video.concurrency + limits.image.concurrency))
        claimed = ClaimedRun(
            options.manifest,
            claims,
            journal,
            outcome=outcome,
            stopping=stopping,
            note=display.note,
        )

    def items() -> Iterator[tuple[str, CreateRequest]]:
        for item in options.manifest.submission_order():
            if stopping.is_set():
                return
            yield item.id, item.resolve(Scheduler.ref)

    async def watch_stop() -> None:
        await stopping.wait()
        in_flight = sum(
            c.creating + c.submitted + c.downloading for c in scheduler.counters().families.values()
        )
        what = "Ctrl-C" if outcome.signal in (None, "SIGINT") else outcome.signal
        display.note(
            f"{what}: creating no more; waiting for {in_flight} in flight "
            f"({what} again to stop at once; a rerun resumes either way)"
        )
        await scheduler.stop_creating()

    budget_noted = False

    async def record(job: Job, result: JobResult | None) -> None:
        nonlocal budget_noted
        family_counts = outcome.by_family.setdefault(job.family, Counter())
        error = job.error
        if result is not None:
            outcome.completed += 1
            family_counts["completed"] += 1
            _note_latency(outcome, job)
            await anyio.to_thread.run_sync(results.write, result_line(job, result))
            display.item_done(job, result, None)
            if result.path is not None:
                tg.start_soon(pictures.make, Path(result.path))
        elif error is not None and error is scheduler.halted:
            # Not the item's fault (the key, the network): pending for a rerun.
            outcome.not_run[halt_reason(error)] += 1
            family_counts["not run"] += 1
        elif isinstance(error, JobDeferred):
            outcome.not_run[error.reason] += 1
            family_counts["not run"] += 1
            if error.reason == "budget" and not budget_noted:
                budget_noted = True
                display.note(
                    f"budget reached (${scheduler.spent_cents / 100:,.2f} of "
                    f"${(options.budget_cents or 0) / 100:,.2f} estimated): creating no "
                    "more; the rest stays queued in the journal for a later run"
                )
        else:
            reason = failure_reason(error)
            outcome.failed.append((job.key, reason))
            family_counts["failed"] += 1
            await anyio.to_thread.run_sync(results.write, result_line(job, None))
            display.item_done(job, None, reason)

    # At most `window` unfinished jobs at a time: the manifest is read lazily.
    slots = anyio.Semaphore(window)
    pictures = _Pictures(options.out_dir)

    async def follow(job: Job) -> None:
        try:
            try:
                result: JobResult | None = await job.result()
            except Exception:  # a failure is a value on the job (job.error)
                result = None
            parked = job.error is not None and job.error is scheduler.halted
            if claimed is None or await claimed.record(job, parked=parked):
                await record(job, result)
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_stop)
        tg.start_soon(display.refresh_loop)
        tg.start_soon(_watch_outage, scheduler, display)
        async with anyio.create_task_group() as jobs:
            async for key, request in claimed.items() if claimed else _aiter(items()):
                await slots.acquire()
                jobs.start_soon(follow, scheduler.submit(request, key=key))
        tg.cancel_scope.cancel()
    if claimed is not None and claimed.waiting_for_a_person:
        batch = f" --batch {options.batch_name}" if options.batch_name else ""
        outcome.claims_wait = claimed.wait_message(
            f"lumasched claims import {options.manifest.path}{batch}"
        )
        display.note(outcome.claims_wait)


class _Pictures:
    """Makes each file's gallery thumbnail (or poster) as it arrives, one at a time
    in a worker thread, so that the page written at the end of the run finds them
    made instead of making them all while the user waits; whatever is still
    waiting when the jobs are done is cancelled and left to the page's own
    threads."""

    def __init__(self, out_dir: Path) -> None:
        self._out_dir = out_dir
        self._thumbs: Any = None
        self._one_at_a_time = anyio.CapacityLimiter(1)

    async def make(self, path: Path) -> None:
        await anyio.to_thread.run_sync(self._make, path, limiter=self._one_at_a_time)

    def _make(self, path: Path) -> None:
        # Whatever fails here fails again when the page is written, which reports it.
        with contextlib.suppress(Exception):
            if self._thumbs is None:
                # Imported here: Pillow (and PyAV) stay off the command's start-up.
                from lumasched.gallery import Thumbnailer

                self._thumbs = Thumbnailer(self._out_dir)
            self._thumbs.prepare_one(path)


async def _aiter(items: Iterator[tuple[str, CreateRequest]]) -> Any:
    for item in items:
        yield item


def halt_reason(error: BaseException) -> str:
    """How the summary names why items were not run after creating stopped."""
    if isinstance(error, APIUnreachableError):
        return "API unreachable"
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return "key rejected"
    return "API refused every create"


OUTAGE_NOTE_EVERY = 10.0
"""Seconds between reminders that the API still cannot be reached."""


async def _watch_outage(scheduler: Any, display: Display, every: float = 0.25) -> None:
    """Say when the API cannot be reached (and while it stays so), and when it is back."""
    noted: float | None = None
    since: float | None = None
    while True:
        await anyio.sleep(every)
        outage = scheduler.outage()
        if outage is None:
            if since is not None and scheduler.halted is None:
                display.note(f"the API answers again after {time.time() - since:.0f}s")
            since = noted = None
            continue
        now = time.monotonic()
        if since is None or noted is None or now - noted >= OUTAGE_NOTE_EVERY:
            gives_up = time.strftime("%H:%M:%S", time.localtime(outage.gives_up_at))
            still = "still " if since is not None else ""
            display.note(
                f"{still}cannot reach the API at {outage.url}: {outage.error}; "
                f"retrying, nothing is lost (gives up at {gives_up})"
            )
            since = outage.since if since is None else since
            noted = now


def _note_latency(outcome: RunOutcome, job: Job) -> None:
    created, completed = job.timings.created, job.timings.completed
    if created is None or completed is None or completed < created:
        return
    entry = outcome.latency.setdefault(job.family, [0.0, 0.0])
    entry[0] += completed - created
    entry[1] += 1
