"""Logs a machine can read: one JSON object per line, per event.

::

    from lumasched.observe import configure_logging, log_job_events

    configure_logging("json")                 # the "lumasched" logger, on stderr
    log_job_events(scheduler)                 # one line per job state change

Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` and
``message``; and, where they apply, ``job`` (the job key), ``generation_id``,
``family``, ``state``, ``duration`` (seconds since the job's previous state)
and ``reason``. Secrets given to the formatter (the CLI gives the API key) and
anything shaped like a bearer token are replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

from lumasched.engine.jobs import TERMINAL_STATES, JobEvent

if TYPE_CHECKING:
    from lumasched.engine.scheduler import Scheduler

__all__ = ["EVENT_FIELDS", "JsonFormatter", "configure_logging", "log_job_events"]

EVENT_FIELDS = ("job", "generation_id", "family", "state", "duration", "reason")
"""The optional fields of a line, taken from a record's ``extra``."""

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")

events_logger = logging.getLogger("lumasched.events")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring)."""

    def __init__(self, *, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _BEARER.sub(r"\1***", text)

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": self._clean(record.getMessage()),
        }
        for field in EVENT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                data[field] = self._clean(value) if isinstance(value, str) else value
        if record.exc_info:
            data["error"] = self._clean(self.formatException(record.exc_info))
        return json.dumps(data, default=str, ensure_ascii=False)


def configure_logging(
    format: Literal["human", "json"] = "json",
    *,
    level: int = logging.INFO,
    stream: IO[str] | None = None,
    secrets: Iterable[str | None] = (),
    logger: str = "lumasched",
) -> logging.Handler:
    """Send ``logger`` (all of lumasched by default) to ``stream`` (stderr), as JSON
    lines or human lines, replacing its handlers; returns the handler."""
    handler = logging.StreamHandler(stream)
    if format == "json":
        handler.setFormatter(JsonFormatter(secrets=secrets))
    elif format == "human":
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    else:
        raise ValueError(f"log format must be 'human' or 'json', got {format!r}")
    target = logging.getLogger(logger)
    target.handlers[:] = [handler]
    target.setLevel(level)
    target.propagate = False
    return handler


def log_job_events(
    scheduler: Scheduler, *, logger: logging.Logger = events_logger
) -> Callable[[], None]:
    """Log every job state change (INFO; failures WARNING) with its fields;
    returns a function that stops it."""
    since: dict[str, float] = {}

    def on_event(event: JobEvent) -> None:
        if event.old is event.new:
            return
        previous = since.pop(event.key, None)
        if event.new not in TERMINAL_STATES:
            since[event.key] = event.at
        reason = event.info.get("reason") or event.info.get("error")
        failed = event.new.value == "failed"
        logger.log(
            logging.WARNING if failed else logging.INFO,
            "job %s: %s -> %s%s",
            event.key,
            event.old.value,
            event.new.value,
            f" ({reason})" if reason else "",
            extra={
                "event": f"job.{event.new.value}",
                "job": event.key,
                "generation_id": event.generation_id,
                "family": event.family.value,
                "state": event.new.value,
                "duration": None if previous is None else round(event.at - previous, 3),
                "reason": None if reason is None else str(reason),
            },
        )

    return scheduler.add_listener(on_event)
