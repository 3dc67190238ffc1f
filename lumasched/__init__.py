"""lumasched: an asyncio-first client and concurrency-aware job scheduler for the
Luma Dream Machine API, with a built-in emulator.

::

    import lumasched

    async with lumasched.LumaClient() as client:          # LUMAAI_API_KEY
        async with lumasched.Scheduler(client, out_dir=Path("out")) as scheduler:
            job = scheduler.submit(lumasched.ImageRequest(model="photon-1", prompt="a fox"))
            result = await job
            print(result.path, result.sha256)

The emulator (``Emulator``, ``EmulatorConfig``, ``Faults``), ``RedisLimiter`` and
the uploads of local input files (``Uploads``, ``S3Target``, ``EmulatorTarget``,
``UploadLog``) are imported on first use, so ``import lumasched`` stays light.

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
    cli/        the commands and the live display: the only code that prints
    emulator/   the offline API, apart (base, api and limits only)

Data flows one way::

    manifest -> request -> engine.submit -> limits.acquire -> api.create -> store
            -> engine poller (api.list/get, callbacks) -> downloads -> store -> result
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    dumps_body,
    generation_refs,
    replace_generation_refs,
    request_from_dict,
    request_to_dict,
)
from lumasched.engine.callbacks import CallbackReceiver, CallbackStats
from lumasched.engine.downloads import (
    Downloader,
    DownloaderStats,
    DownloadResult,
    download_asset,
    safe_target,
    sha256_file,
)
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
from lumasched.engine.poller import (
    LatencyEstimator,
    LatencyKey,
    Poller,
    PollerStats,
    latency_key_for,
)
from lumasched.engine.scheduler import Scheduler
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
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
    TimeoutError,
    TooManyRedirects,
    TransportError,
    UnprocessableEntityError,
    UploadError,
    ValidationError,
)
from lumasched.limits import (
    BUILD_TIER,
    Family,
    FamilyLimits,
    FamilyStatistics,
    InProcessLimiter,
    Limiter,
    Limits,
    OrphanLease,
    family_of,
    make_limiter,
)
from lumasched.pricing import PriceTable, estimate_cost_cents
from lumasched.store.journal import Journal

if TYPE_CHECKING:
    from lumasched.emulator import Emulator, EmulatorConfig, Faults
    from lumasched.inputs import EmulatorTarget, S3Target, UploadLog, Uploads
    from lumasched.limits.redis import RedisLimiter

__version__ = "0.1.0"

_LAZY = {
    "Emulator": "lumasched.emulator",
    "EmulatorConfig": "lumasched.emulator",
    "Faults": "lumasched.emulator",
    "RedisLimiter": "lumasched.limits.redis",
    # Local files as inputs (Pillow's checks load with them).
    "EmulatorTarget": "lumasched.inputs",
    "S3Target": "lumasched.inputs",
    "UploadLog": "lumasched.inputs",
    "Uploads": "lumasched.inputs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lumasched' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILD_TIER",
    "APIStatusError",
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
    "Concept",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "Counters",
    "CreateRequest",
    "Credits",
    "DependencyFailed",
    "DownloadError",
    "DownloadResult",
    "Downloader",
    "DownloaderStats",
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
    "LatencyEstimator",
    "LatencyKey",
    "Limiter",
    "Limits",
    "LumaClient",
    "LumaError",
    "Media",
    "MissingAssetError",
    "ModifyVideoRequest",
    "NotFoundError",
    "OrphanLease",
    "PermissionDeniedError",
    "Ping",
    "Poller",
    "PollerStats",
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
    "StorageError",
    "Timeout",
    "TimeoutError",
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
    "download_asset",
    "dumps_body",
    "estimate_cost_cents",
    "family_of",
    "generation_refs",
    "latency_key_for",
    "make_limiter",
    "replace_generation_refs",
    "request_from_dict",
    "request_to_dict",
    "safe_target",
    "sha256_file",
]
