"""A finished job as the run reports it: its ``results.jsonl`` line and the
reason a failure is shown with (``store.results`` keeps the lines)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from lumasched.engine.jobs import Job, JobResult, Timings
from lumasched.errors import DependencyFailed, GenerationFailed

__all__ = ["failure_reason", "result_line"]


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")


def _timings(timings: Timings) -> dict[str, str | None]:
    return {
        "queued": _iso(timings.queued),
        "created": _iso(timings.created),
        "completed": _iso(timings.completed),
        "downloaded": _iso(timings.downloaded),
    }


def failure_reason(error: BaseException | None) -> str:
    """The reason a job failed, as a user reads it."""
    if isinstance(error, GenerationFailed):
        return error.failure_reason or "no reason given"
    if isinstance(error, DependencyFailed):
        return f"depends on {error.dependency_key!r}, which {error.reason}"
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return str(error) if error is not None else "unknown"


def result_line(job: Job, result: JobResult | None) -> dict[str, Any]:
    """The results.jsonl record of a finished job (completed or failed)."""
    if result is not None:
        return {
            "id": job.key,
            "state": "completed",
            "generation_id": result.generation.id,
            "path": result.path,
            "sha256": result.sha256,
            "bytes": result.bytes,
            "failure_reason": None,
            "timings": _timings(result.timings),
        }
    return {
        "id": job.key,
        "state": "failed",
        "generation_id": job.generation_id,
        "path": None,
        "sha256": None,
        "bytes": None,
        "failure_reason": failure_reason(job.error),
        "timings": _timings(job.timings),
    }
