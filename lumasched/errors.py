"""Every exception lumasched raises, in one tree.

::

    LumaError
    ├── ConfigurationError          bad settings, limits file or missing API key
    ├── ValidationError             a request (or manifest item) is invalid; nothing was sent
    ├── TransportError              the request did not complete at the HTTP level
    │   ├── ConnectError            could not connect: the server surely did not act
    │   │   └── APIUnreachableError     still could not connect after the allowed time
    │   ├── APITimeoutError         connect/read/total deadline passed (may have reached the server)
    │   ├── TooManyRedirects        still redirected after aiohttp's 10 hops (a redirect loop)
    │   └── ResponseTooLargeError   an API answer larger than the cap (``max_response_bytes``)
    ├── APIStatusError              the server answered with an error status
    │   ├── BadRequestError         400 (``detail`` holds the server's message)
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError          429 (``retry_after`` in seconds, when the server said)
    │   └── InternalServerError     5xx
    ├── AmbiguousCreateError        a create may or may not have reached the server;
    │                               reconcile before retrying (never blindly re-POST)
    ├── GenerationFailed            a generation ended ``failed`` (``failure_reason``, ``category``)
    ├── GenerationTimeout           no terminal state within the job timeout (id kept for a rerun)
    ├── MissingAssetError           ``completed`` without an asset URL (id kept for a rerun)
    ├── DependencyFailed            a job waited on another job that failed or was cancelled
    ├── JobCancelled                ``job.cancel()`` was called before the job finished
    ├── JobDeferred                 not finished in this session; the journal keeps it (``reason``)
    ├── DownloadError               an asset could not be fetched, written or verified
    │   └── AssetTooLargeError      the asset is larger than ``max_asset_size``
    ├── JournalError                the journal is unreadable or belongs to another batch
    │   └── JournalLockedError      another run (or ``Journal``) holds the journal
    ├── ItemsChangedError           items were edited after their generation was created
    ├── StorageError                the journal or results file cannot be written (disk full, ...)
    ├── UploadError                 a local input file could not be uploaded (``target``)
    ├── JournalledFailure           a job failed in an earlier run (as its journal recorded)
    ├── ClaimLost                   another worker took the item over: not created here
    ├── ClaimsLostError             (no longer raised: a lost claim state is re-seeded)
    └── ClaimStoreUnavailable       Redis could not be reached for the item claims

The ``Claim*`` errors come from working one manifest from many hosts
(``lumasched.claims``, see docs/multihost.md).

Status class names follow the official ``lumaai`` SDK so its users feel at home.
Errors carry data as attributes and compute ``__str__``; none of them ever holds
the API key.
"""

from __future__ import annotations

import builtins
import enum
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "APIStatusError",
    "APITimeoutError",
    "APIUnreachableError",
    "AmbiguousCreateError",
    "AssetTooLargeError",
    "AuthenticationError",
    "BadRequestError",
    "ClaimLost",
    "ClaimStoreUnavailable",
    "ClaimsLostError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "DependencyFailed",
    "DownloadError",
    "FailureCategory",
    "GenerationFailed",
    "GenerationTimeout",
    "InternalServerError",
    "ItemsChangedError",
    "JobCancelled",
    "JobDeferred",
    "JournalError",
    "JournalLockedError",
    "JournalledFailure",
    "LumaError",
    "MissingAssetError",
    "NotFoundError",
    "PermissionDeniedError",
    "Problem",
    "RateLimitError",
    "ResponseTooLargeError",
    "StorageError",
    "TooManyRedirects",
    "TransportError",
    "UnprocessableEntityError",
    "UploadError",
    "ValidationError",
    "status_error_for",
]


class LumaError(Exception):
    """Root of every error lumasched raises."""


class ConfigurationError(LumaError):
    """Settings, a limits file or the environment are unusable (e.g. no API key)."""


class Problem:
    """One validation problem: where (a dotted field path) and what."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __repr__(self) -> str:
        return f"Problem(path={self.path!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return (self.path, self.message) == (other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))


class ValidationError(LumaError, ValueError):
    """A request is invalid. ``problems`` lists every issue, each with its field path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            return f"invalid request: {lines[0]}"
        return "invalid request:\n" + "\n".join(f"  {line}" for line in lines)


class TransportError(LumaError):
    """The HTTP exchange did not complete (``method`` and ``url`` say which)."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        self.method = method
        self.url = url
        super().__init__(message)


class ConnectError(TransportError):
    """No connection could be made: the server surely did not see the request."""


class APIUnreachableError(ConnectError):
    """The API could not be reached for ``waited`` seconds (``since``: UNIX time of the
    first failure; ``url``: the base URL; ``cause``: the last connect error). Nothing
    was created meanwhile: the jobs not created stay pending for a later run."""

    def __init__(self, url: str, *, since: float, waited: float, cause: str) -> None:
        self.since = since
        self.waited = waited
        self.cause = cause
        super().__init__(
            f"cannot reach the API at {url} (gave up after {waited:.0f}s): {cause}", url=url
        )


class APITimeoutError(TransportError, builtins.TimeoutError):
    """A timeout: the request may have reached the server. (Named as in the official
    SDK; also a builtin ``TimeoutError``. 0.1's ``lumasched.TimeoutError`` is a
    deprecated alias.)"""


class TooManyRedirects(TransportError):
    """Still redirected after the most hops allowed: a redirect loop, not worth retrying."""


class ResponseTooLargeError(TransportError):
    """An API answer was larger than the client's cap (``Settings.max_response_bytes``):
    reading stopped there, so a broken server cannot exhaust memory."""

    def __init__(self, limit: int, *, method: str = "", url: str = "") -> None:
        self.limit = limit
        super().__init__(
            f"answer larger than {limit} bytes, the cap on API answers ({method} {url})",
            method=method,
            url=url,
        )


class APIStatusError(LumaError):
    """The server answered with an error status."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        body: Any = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.detail = detail
        self.body = body
        self.method = method
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"HTTP {self.status}{detail}{where}"


class BadRequestError(APIStatusError):
    """400: the server rejected the request (see ``detail``)."""


class AuthenticationError(APIStatusError):
    """401: missing or invalid API key."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: unknown generation id or path."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422."""


class RateLimitError(APIStatusError):
    """429: over the account's concurrency cap or create rate."""

    def __init__(
        self,
        status: int = 429,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
        body: Any = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, detail, body=body, method=method, url=url)

    def __str__(self) -> str:
        base = super().__str__()
        if self.retry_after is not None:
            return f"{base} (retry after {self.retry_after:g}s)"
        return base


class InternalServerError(APIStatusError):
    """5xx."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_for(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status, APIStatusError)


class AmbiguousCreateError(LumaError):
    """A create request may have reached the server, but no answer came back.

    Retrying blindly could start (and bill) a duplicate generation, so the
    scheduler reconciles against the list endpoint first. ``sent_at`` is the
    UTC time the request left, ``body`` the JSON that was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        body: dict[str, Any],
        sent_at: float,
        cause: BaseException | None = None,
    ) -> None:
        self.path = path
        self.body = body
        self.sent_at = sent_at
        self.cause = cause
        super().__init__(message)

    def __str__(self) -> str:
        return f"create outcome unknown ({self.path}): {self.args[0]}"


class FailureCategory(enum.StrEnum):
    """Broad classes of ``failure_reason``, from the documented failure messages."""

    MODERATION = "moderation"
    INPUT_FRAMES = "input_frames"
    PROMPT = "prompt"
    JOB = "job"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, reason: str | None) -> FailureCategory:
        text = (reason or "").lower()
        if "moderat" in text or "blacklist" in text:
            return cls.MODERATION
        if "input frames" in text or "keyframe" in text:
            return cls.INPUT_FRAMES
        if "prompt" in text:
            return cls.PROMPT
        if "job" in text or "callback" in text or "dispatch" in text:
            return cls.JOB
        return cls.UNKNOWN


class GenerationFailed(LumaError):
    """A generation reached the ``failed`` state."""

    def __init__(self, generation_id: str | None, failure_reason: str | None) -> None:
        self.generation_id = generation_id
        self.failure_reason = failure_reason
        self.category = FailureCategory.of(failure_reason)
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"generation {self.generation_id} failed ({self.category}): "
            f"{self.failure_reason or 'no reason given'}"
        )


class GenerationTimeout(LumaError):
    """A generation reached no terminal state within the job timeout.

    The generation id stays in the journal, so a later run polls it again
    rather than creating it anew.
    """

    def __init__(self, generation_id: str, seconds: float, state: str | None) -> None:
        self.generation_id = generation_id
        self.seconds = seconds
        self.state = state
        super().__init__(str(self))

    def __str__(self) -> str:
        last = f"; last state {self.state!r}" if self.state else ""
        return f"no terminal state after {self.seconds:g}s (generation {self.generation_id}{last})"


class MissingAssetError(LumaError):
    """A generation is ``completed`` but, even after a few re-reads, names no asset URL.

    The generation id stays in the journal, so a later run can fetch the asset.
    """

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"completed without an asset (generation {self.generation_id})"


class DependencyFailed(LumaError):
    """A job depended on another job that failed or was cancelled."""

    def __init__(self, job_key: str, dependency_key: str, reason: str) -> None:
        self.job_key = job_key
        self.dependency_key = dependency_key
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"job {self.job_key!r} depends on {self.dependency_key!r}, which {self.reason}"


class DownloadError(LumaError):
    """An asset could not be downloaded, written to disk, or did not verify."""


class AssetTooLargeError(DownloadError):
    """The asset is larger than the download cap (``max_asset_size``); nothing of it is kept."""

    def __init__(self, name: str, limit: int, size: int | None = None) -> None:
        self.name = name
        self.limit = limit
        self.size = size
        super().__init__(str(self))

    def __str__(self) -> str:
        size = f"is {self.size} bytes" if self.size is not None else "goes on"
        return f"{self.name}: asset {size}, more than the {self.limit}-byte cap (--max-asset-size)"


class JournalError(LumaError):
    """The journal cannot be used (corrupt, newer schema, or another batch's)."""


class JournalLockedError(JournalError):
    """Another run holds the journal (or output folder): ``pid``, ``host`` and
    ``since`` (UNIX time) name it, when its lock file says. The OS drops the lock
    when that process ends in any way, so the next run is never blocked by a dead one."""

    def __init__(
        self,
        path: Any,
        pid: int | None,
        host: str | None,
        since: float | None,
        what: str = "journal",
    ) -> None:
        self.path = path
        self.pid = pid
        self.host = host
        self.since = since
        holder = holder_text(pid, host, since)
        super().__init__(
            f"{path}: this {what} is in use by another lumasched run ({holder}); "
            "wait for it to end (or stop it), then run again"
        )


def holder_text(pid: int | None, host: str | None, since: float | None) -> str:
    """``pid 12 on host, since 2026-01-01 10:00:00 UTC`` (what is known of a lock holder)."""
    if pid is None:
        return "another process"
    text = f"pid {pid} on {host or 'an unknown host'}"
    if since is not None:
        text += ", since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    return text


class ItemsChangedError(LumaError):
    """Items whose request changed after their generation was created: re-creating
    them costs money, so it needs an explicit choice (``--redo-changed``).
    ``problems`` has one ``FILE:LINE: id: ...`` entry per item."""

    def __init__(self, problems: Sequence[Problem], *, cost_cents: float | None = None) -> None:
        self.problems = list(problems)
        self.cost_cents = cost_cents
        """Estimated cost of creating them anew, when known."""
        count = len(self.problems)
        lines = "".join(f"\n  {problem}" for problem in self.problems)
        super().__init__(f"{count} item{'s' if count != 1 else ''} changed since created:{lines}")


class StorageError(LumaError):
    """The journal or the results file cannot be written: no space, a read-only
    file system, permissions. ``what`` names the file's role (``journal``,
    ``results``) and ``path`` the file; ``str()`` is one line for a user.

    A run that hits it stops creating at once: without its journal it could not
    promise that nothing is created twice.
    """

    def __init__(self, message: str, *, path: str, what: str) -> None:
        self.path = path
        self.what = what
        super().__init__(message)


class UploadError(LumaError):
    """A local input file could not be uploaded (or its URL signed): ``target``
    names the storage (``s3://bucket/prefix``, ``emulator``), ``path`` the file.
    Nothing was created for the item."""

    def __init__(self, message: str, *, target: str, path: str) -> None:
        self.target = target
        self.path = path
        super().__init__(message)


class JobCancelled(LumaError):
    """``job.cancel()`` was called before the job finished."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"job {key!r} was cancelled")


class JobDeferred(LumaError):
    """The job was not finished in this session and stays in the journal for a later run.

    ``reason`` is ``"budget"`` (the spending limit was reached), ``"stopped"``
    (creating was stopped before this job was created) or ``"shutdown"`` (the
    scheduler closed while the generation was still in flight).
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"job {key!r} was deferred ({reason}); run again to resume it")


class JournalledFailure(LumaError):
    """A job that failed in an earlier run, as the journal recorded it."""

    def __init__(self, key: str, error_type: str | None, reason: str | None) -> None:
        self.key = key
        self.error_type = error_type
        self.reason = reason
        super().__init__(f"job {key!r} failed earlier ({error_type}): {reason}")


class ClaimLost(LumaError):
    """A create was not sent because this worker no longer holds the item's claim
    (its lease expired and another worker took it over)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.reason = "claimed by another worker"
        super().__init__(f"item {key!r}: claim lost to another worker; not created here")


class ClaimsLostError(LumaError):
    """Redis lost the claim state (restart without persistence, FLUSH, eviction).

    No longer raised: ``ClaimStore`` re-seeds a lost state and items that a gone
    worker may have made wait (``ClaimStatus.UNKNOWN``). Kept so that code
    catching it still imports."""


class ClaimStoreUnavailable(LumaError):
    """Redis could not be reached to read or write the item claims."""


_DEPRECATED = {"TimeoutError": "APITimeoutError"}


def __getattr__(name: str) -> Any:
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module 'lumasched.errors' has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"lumasched.errors.{name} is deprecated (it shadowed the builtin); use {new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
