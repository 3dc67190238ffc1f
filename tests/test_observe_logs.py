"""JSON logs from the library: one object per line, per event, never the key."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumasched.api import ImageRequest
from lumasched.errors import GenerationFailed
from lumasched.observe import JsonFormatter, configure_logging, log_job_events
from tests._engine_fixtures import API_KEY, engine


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the "lumasched" logger's setup: put it back."""
    target = logging.getLogger("lumasched")
    saved = (target.handlers[:], target.level, target.propagate)
    try:
        yield
    finally:
        target.handlers[:], target.level, target.propagate = saved


@pytest.mark.usefixtures("restore_logging")
async def test_every_line_of_a_run_is_json_with_the_job_fields(tmp_path: Path) -> None:
    """A real run logged as JSON: every line parses; state changes carry job, generation,
    family, state, duration; a failure carries its reason; the key never appears."""
    stream = io.StringIO()
    configure_logging("json", stream=stream, secrets=[API_KEY], level=logging.DEBUG)
    async with engine(out_dir=tmp_path) as (_, _, scheduler):
        log_job_events(scheduler)
        ok = scheduler.submit(ImageRequest("a cat"), key="ok")
        bad = scheduler.submit(ImageRequest("a cat fail:frame_moderation"), key="bad")
        await ok
        with pytest.raises(GenerationFailed):
            await bad
        # A careless message cannot leak the key either.
        logging.getLogger("lumasched.test").warning(
            "sent Authorization: Bearer %s to %s", API_KEY, "the API"
        )
    text = stream.getvalue()
    assert API_KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "event", "message"} <= set(x) for x in lines)
    by_event = {(x["event"], x.get("job")): x for x in lines}
    done = by_event["job.completed", "ok"]
    assert done["family"] == "image" and done["state"] == "completed"
    assert done["generation_id"] == ok.generation_id and done["duration"] >= 0
    failed = by_event["job.failed", "bad"]
    assert failed["level"] == "warning" and "moderation" in failed["reason"].lower()
    leak = [x for x in lines if x["logger"] == "lumasched.test"]
    assert leak[0]["message"] == "sent Authorization: Bearer *** to the API"


def test_human_format_stays_the_default_shape() -> None:
    """configure_logging("human") writes the usual one-line text, not JSON."""
    target = logging.getLogger("lumasched.observe.test-human")
    stream = io.StringIO()
    configure_logging("human", stream=stream, logger=target.name)
    target.info("hello %s", "there")
    line = stream.getvalue().strip()
    assert line.endswith("INFO lumasched.observe.test-human: hello there")


def test_formatter_keeps_exceptions_on_one_line() -> None:
    """An exception's traceback goes into the "error" field of the same line."""
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["error"]


def test_unknown_format_is_refused() -> None:
    """A typo in the format is an error naming it, not silent human output."""
    with pytest.raises(ValueError, match="'xml'"):
        configure_logging("xml", logger="lumasched.observe.test-bad")  # type: ignore[arg-type]
