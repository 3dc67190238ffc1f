"""lumasched: an asyncio-first client and concurrency-aware job scheduler for the
Luma Dream Machine API, with a built-in emulator.

::

    import lumasched

    async with lumasched.Luma(out_dir="out") as luma:      # LUMAAI_API_KEY
        result = await luma.generate(lumasched.ImageRequest("a fox in the snow"))
        print(result.path, result.sha256)

``Luma`` owns a ``LumaClient``, a limiter, a ``Journal`` and a ``Scheduler``;
those stay available for code that wires them itself. ``LumaSync`` and
``generate_sync`` do the same from code that cannot await (notebooks too).

The top level holds the user's nouns and the types in their signatures;
plumbing lives in its module (``lumasched.api.dumps_body``,
``lumasched.engine.downloads.sha256_file``, ...).

Every name here is imported from its module on first use, so ``import
lumasched`` stays light: the emulator, ``RedisLimiter``, the observability names
(``lumasched.observe``), the uploads of local input files (``lumasched.inputs``)
and the gallery (``lumasched.gallery``) load only when used, and so do aiohttp
and the engine (the ``lumasched`` command starts without them).

The package is a stack of layers, lowest first; a module imports only its own
layer and the ones below (docs/architecture.md, checked by
tests/test_architecture.py)::

    errors, _config, _clock, pricing   base
    api/        the wire: models, the taxonomy (Family), converter, client
    limits/     Limiter protocol; in-process and Redis limiters; make_limiter
    store/      the SQLite journal and its group commit; results.jsonl; the upload log
    inputs/     local files as inputs: checks, uploads (S3, the emulator's store)
    engine/     Scheduler, job table, create/follow/restore/reconcile, poller, downloads
    manifest/   JSONL / CSV / YAML -> validated requests; the dry-run plan
    claims/     cross-host item claims in Redis
    gallery/    the run's page (DIR/index.html, plots) and the live Dashboard
    observe/    metrics (Prometheus, OpenTelemetry) and JSON logs, from outside the engine
    facade/     Luma, LumaSync: one object owning client, limiter, journal, scheduler
    web/        callback routes and live events (SSE) for aiohttp and ASGI apps
    cli/        the commands and the live display: the only code that prints
    emulator/   the offline API, apart (base, api and limits only)

Data flows one way::

    manifest -> request -> engine.submit -> limits.acquire -> api.create -> store
            -> engine poller (api.list/get, callbacks) -> downloads -> store -> result
"""

from __future__ import annotations

import importlib
import importlib.util
import typing
import warnings

if typing.TYPE_CHECKING:
    from lumasched._clock import Clock
    from lumasched._config import Settings
    from lumasched.api import (
        Assets,
        AssetStream,
        AudioRequest,
        CharacterIdentity,
        CharacterRef,
        ClientStats,
        Concept,
        CreateRequest,
        Credits,
        Generation,
        GenerationKeyframe,
        GenerationPage,
        GenerationState,
        ImageKeyframe,
        ImageRef,
        ImageRequest,
        Keyframe,
        Keyframes,
        LumaClient,
        Media,
        ModifyVideoRequest,
        Ping,
        ReframeImageRequest,
        ReframeVideoRequest,
        RetryPolicy,
        Timeout,
        UpscaleRequest,
        VideoRequest,
        request_from_dict,
        request_to_dict,
    )
    from lumasched.emulator import Emulator, EmulatorConfig, Faults
    from lumasched.engine.callbacks import CallbackReceiver, CallbackStats
    from lumasched.engine.downloads import Downloader
    from lumasched.engine.events import Counters, FamilyCounts
    from lumasched.engine.jobs import (
        Job,
        JobCancelled,
        JobDeferred,
        JobEvent,
        JobResult,
        JobState,
        Timings,
    )
    from lumasched.engine.poller import Poller
    from lumasched.engine.scheduler import Scheduler
    from lumasched.errors import (
        AmbiguousCreateError,
        APIStatusError,
        APITimeoutError,
        APIUnreachableError,
        AssetTooLargeError,
        AuthenticationError,
        BadRequestError,
        ClaimLost,
        ClaimsLostError,
        ClaimStoreUnavailable,
        ConfigurationError,
        ConflictError,
        ConnectError,
        DependencyFailed,
        DownloadError,
        FailureCategory,
        GenerationFailed,
        GenerationTimeout,
        InternalServerError,
        ItemsChangedError,
        JournalError,
        JournalledFailure,
        JournalLockedError,
        LumaError,
        MissingAssetError,
        NotFoundError,
        PermissionDeniedError,
        Problem,
        RateLimitError,
        ResponseTooLargeError,
        StorageError,
        TooManyRedirects,
        TransportError,
        UnprocessableEntityError,
        UploadError,
        ValidationError,
    )
    from lumasched.facade import Luma, LumaSync, generate_sync
    from lumasched.gallery import Dashboard, write_gallery
    from lumasched.inputs import EmulatorTarget, S3Target, UploadLog, Uploads
    from lumasched.limits import (
        BUILD_TIER,
        Family,
        FamilyLimits,
        FamilyStatistics,
        InProcessLimiter,
        Limiter,
        Limits,
        family_of,
        make_limiter,
    )
    from lumasched.limits.redis import RedisLimiter
    from lumasched.observe import SchedulerMetrics, SharedLimitsMetrics, configure_logging
    from lumasched.pricing import PriceTable, estimate_cost_cents
    from lumasched.store.journal import Journal


__version__ = "0.1.0"

# Every public name loads with its module on first use, so `import lumasched` (and
# the `lumasched` command's start: `--help` needs neither aiohttp nor the engine)
# costs almost nothing; the imports above tell type checkers what each name is.
_HOMES: dict[str, str] = {
    "lumasched._clock": "Clock",
    "lumasched._config": "Settings",
    "lumasched.api": (
        "Assets AssetStream AudioRequest CharacterIdentity CharacterRef ClientStats Concept "
        "CreateRequest Credits Generation GenerationKeyframe GenerationPage GenerationState "
        "ImageKeyframe ImageRef ImageRequest Keyframe Keyframes LumaClient Media "
        "ModifyVideoRequest Ping ReframeImageRequest ReframeVideoRequest RetryPolicy Timeout "
        "UpscaleRequest VideoRequest request_from_dict request_to_dict"
    ),
    "lumasched.engine.callbacks": "CallbackReceiver CallbackStats",
    "lumasched.engine.downloads": "Downloader",
    "lumasched.engine.events": "Counters FamilyCounts",
    "lumasched.engine.jobs": "Job JobCancelled JobDeferred JobEvent JobResult JobState Timings",
    "lumasched.engine.poller": "Poller",
    "lumasched.engine.scheduler": "Scheduler",
    "lumasched.errors": (
        "AmbiguousCreateError APIStatusError APITimeoutError APIUnreachableError "
        "AssetTooLargeError AuthenticationError BadRequestError ClaimLost ClaimsLostError "
        "ClaimStoreUnavailable ConfigurationError ConflictError ConnectError DependencyFailed "
        "DownloadError FailureCategory GenerationFailed GenerationTimeout InternalServerError "
        "ItemsChangedError JournalError JournalledFailure JournalLockedError LumaError "
        "MissingAssetError NotFoundError PermissionDeniedError Problem RateLimitError "
        "ResponseTooLargeError StorageError TooManyRedirects TransportError "
        "UnprocessableEntityError UploadError ValidationError"
    ),
    "lumasched.facade": "Luma LumaSync generate_sync",
    "lumasched.limits": (
        "BUILD_TIER Family FamilyLimits FamilyStatistics InProcessLimiter Limiter Limits "
        "family_of make_limiter"
    ),
    "lumasched.pricing": "PriceTable estimate_cost_cents",
    "lumasched.store.journal": "Journal",
    "lumasched.emulator": "Emulator EmulatorConfig Faults",
    "lumasched.gallery": "Dashboard write_gallery",
    "lumasched.inputs": "EmulatorTarget S3Target UploadLog Uploads",
    "lumasched.limits.redis": "RedisLimiter",
    "lumasched.observe": "SchedulerMetrics SharedLimitsMetrics configure_logging",
}
_LAZY = {name: module for module, names in _HOMES.items() for name in names.split()}

# 0.1 exported these at the top; they still resolve there, with a warning naming
# their home, but are no longer part of ``__all__``.
_MOVED = {
    "DownloadResult": "lumasched.engine.downloads",
    "DownloaderStats": "lumasched.engine.downloads",
    "download_asset": "lumasched.engine.downloads",
    "safe_target": "lumasched.engine.downloads",
    "sha256_file": "lumasched.engine.downloads",
    "LatencyEstimator": "lumasched.engine.poller",
    "LatencyKey": "lumasched.engine.poller",
    "PollerStats": "lumasched.engine.poller",
    "latency_key_for": "lumasched.engine.poller",
    "OrphanLease": "lumasched.limits",
    "dumps_body": "lumasched.api",
    "generation_refs": "lumasched.api",
    "replace_generation_refs": "lumasched.api",
}
_RENAMED = {"TimeoutError": ("lumasched.errors", "APITimeoutError")}


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # ``import lumasched`` then ``lumasched.api.dumps_body``: a subpackage loads
        # on first use too (importing it makes it an attribute of this package).
        return importlib.import_module(f"{__name__}.{name}")
    if name in _MOVED:
        module, new = _MOVED[name], name
        hint = f"import it from {module}"
    elif name in _RENAMED:
        module, new = _RENAMED[name]
        hint = f"use lumasched.{new} (the old name shadowed the builtin)"
    else:
        raise AttributeError(f"module 'lumasched' has no attribute {name!r}")
    warnings.warn(f"lumasched.{name} is deprecated: {hint}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), new)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BUILD_TIER",
    "APIStatusError",
    "APITimeoutError",
    "APIUnreachableError",
    "AmbiguousCreateError",
    "AssetStream",
    "AssetTooLargeError",
    "Assets",
    "AudioRequest",
    "AuthenticationError",
    "BadRequestError",
    "CallbackReceiver",
    "CallbackStats",
    "CharacterIdentity",
    "CharacterRef",
    "ClaimLost",
    "ClaimStoreUnavailable",
    "ClaimsLostError",
    "ClientStats",
    "Clock",
    "Concept",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "Counters",
    "CreateRequest",
    "Credits",
    "Dashboard",
    "DependencyFailed",
    "DownloadError",
    "Downloader",
    "Emulator",
    "EmulatorConfig",
    "EmulatorTarget",
    "FailureCategory",
    "Family",
    "FamilyCounts",
    "FamilyLimits",
    "FamilyStatistics",
    "Faults",
    "Generation",
    "GenerationFailed",
    "GenerationKeyframe",
    "GenerationPage",
    "GenerationState",
    "GenerationTimeout",
    "ImageKeyframe",
    "ImageRef",
    "ImageRequest",
    "InProcessLimiter",
    "InternalServerError",
    "ItemsChangedError",
    "Job",
    "JobCancelled",
    "JobDeferred",
    "JobEvent",
    "JobResult",
    "JobState",
    "Journal",
    "JournalError",
    "JournalLockedError",
    "JournalledFailure",
    "Keyframe",
    "Keyframes",
    "Limiter",
    "Limits",
    "Luma",
    "LumaClient",
    "LumaError",
    "LumaSync",
    "Media",
    "MissingAssetError",
    "ModifyVideoRequest",
    "NotFoundError",
    "PermissionDeniedError",
    "Ping",
    "Poller",
    "PriceTable",
    "Problem",
    "RateLimitError",
    "RedisLimiter",
    "ReframeImageRequest",
    "ReframeVideoRequest",
    "ResponseTooLargeError",
    "RetryPolicy",
    "S3Target",
    "Scheduler",
    "SchedulerMetrics",
    "Settings",
    "SharedLimitsMetrics",
    "StorageError",
    "Timeout",
    "Timings",
    "TooManyRedirects",
    "TransportError",
    "UnprocessableEntityError",
    "UploadError",
    "UploadLog",
    "Uploads",
    "UpscaleRequest",
    "ValidationError",
    "VideoRequest",
    "configure_logging",
    "estimate_cost_cents",
    "family_of",
    "generate_sync",
    "make_limiter",
    "request_from_dict",
    "request_to_dict",
    "write_gallery",
]
