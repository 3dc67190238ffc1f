"""Find out whether a create whose answer never came back started a generation.

The list endpoint is the only way to ask. Its order, its consistency lag and
the exact shape of the ``request`` echo are not documented, so the search
assumes none of them:

* pages are read from offset 0; when a page is sorted newest-first, reading
  stops at the first generation older than the send time (minus a clock-skew
  allowance); when it is sorted oldest-first the tail is read instead (using
  ``count``); otherwise every page is read, up to ``max_pages``;
* a generation is *ours* when its ``request`` echo contains every field we
  sent with the same value (strings compared with whitespace collapsed; extra
  echo fields such as server defaults are ignored) and it was created no
  earlier than ``sent_at - skew``; a generation already owned by another job
  is never adopted;
* a candidate that can be neither matched nor ruled out (no echo, a missing
  field, no ``created_at``) makes the answer *inconclusive*.

Only a *conclusive* "not found" lets the caller consider a retry, and only
after a settle time (see ``docs/guarantees.md``).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from lumasched.api import CreateRequest, Generation, LumaClient

__all__ = ["Match", "ReconcileResult", "compare_echo", "find_created", "fingerprint", "match_body"]

DEFAULT_SKEW = 120.0
"""Seconds the server's clock may be behind ours."""


def match_body(request: CreateRequest) -> dict[str, Any]:
    """What reconcile compares with the server's ``request`` echo: the body sent,
    plus the source generation of upscale/audio (which travels in the path)."""
    body = request.to_body()
    source = getattr(request, "generation_id", None)
    if source is not None:
        body = {**body, "generation_id": source}
    return body


def fingerprint(body: dict[str, Any]) -> str:
    """Identifies identical create bodies ("twins": a generation listed may be
    either one's) without keeping or storing the bodies themselves."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Match(enum.Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


_SPACE = re.compile(r"\s+")


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return _SPACE.sub(" ", value).strip()
    return value


def compare_echo(echo: Any, sent: Any) -> Match:
    """Does a ``request`` echo describe the body we sent?

    ``NO`` needs a definite difference in a field present on both sides;
    a field we sent that the echo lacks makes the answer ``UNKNOWN``.
    """
    if isinstance(sent, dict):
        if not isinstance(echo, dict):
            return Match.UNKNOWN if echo is None else Match.NO
        return _all_of(
            Match.UNKNOWN if echo.get(name) is None else compare_echo(echo[name], value)
            for name, value in sent.items()
            if value is not None
        )
    if isinstance(sent, list):
        if not isinstance(echo, list):
            return Match.UNKNOWN if echo is None else Match.NO
        if len(echo) != len(sent):
            return Match.NO
        return _all_of(compare_echo(e, s) for e, s in zip(echo, sent, strict=True))
    if isinstance(sent, bool) or isinstance(echo, bool):
        return Match.YES if sent is echo else Match.NO
    return Match.YES if _norm(echo) == _norm(sent) else Match.NO


def _all_of(verdicts: Iterable[Match]) -> Match:
    """``NO`` at the first ``NO`` (the rest are not computed); else ``UNKNOWN``
    if any is, else ``YES``."""
    verdict = Match.YES
    for sub in verdicts:
        if sub is Match.NO:
            return Match.NO
        if sub is Match.UNKNOWN:
            verdict = Match.UNKNOWN
    return verdict


@attrs.frozen
class ReconcileResult:
    """What one search found. ``conclusive`` means: had the generation been listed, we saw it."""

    generation: Generation | None
    conclusive: bool
    pages: int
    reason: str = ""


def _timestamp(generation: Generation) -> float | None:
    created = generation.created_at
    if created is None:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.timestamp()


def _order(times: list[float]) -> int:
    """1 if oldest-first, -1 if newest-first, 0 if neither (or too short to say)."""
    if len(times) < 2:
        return 0
    if all(a >= b for a, b in itertools.pairwise(times)):
        return -1
    if all(a <= b for a, b in itertools.pairwise(times)):
        return 1
    return 0


async def find_created(
    client: LumaClient,
    *,
    body: dict[str, Any],
    sent_at: float,
    is_taken: Callable[[str], bool],
    skew: float = DEFAULT_SKEW,
    page_size: int = 100,
    max_pages: int = 10,
) -> ReconcileResult:
    """Search the account's generations for the one a create of ``body`` at ``sent_at`` made.

    ``sent_at`` is the wall-clock UNIX time the request left; ``is_taken(id)``
    says whether another job already owns a generation. Each page is read once
    (``retry=False``): a failed read raises, and the caller's loop, which asks
    again until its give-up time anyway, is the one retry layer.
    """
    cutoff = sent_at - skew
    best: Generation | None = None
    unknown: list[str] = []
    pages = 0
    offset = 0
    tail_mode = False
    while True:
        if pages >= max_pages:
            return _result(best, unknown, pages, complete=False, why="page limit reached")
        page = await client.list(limit=page_size, offset=offset, retry=False)
        pages += 1
        times: list[float] = []
        for generation in page.generations:
            created = _timestamp(generation)
            if created is not None:
                times.append(created)
                if created < cutoff:
                    continue
            if is_taken(generation.id):
                continue
            verdict = compare_echo(generation.request, body)
            if verdict is Match.YES:
                return _result(generation, [], pages, complete=True, why="")
            if verdict is Match.UNKNOWN:
                unknown.append(generation.id)
        order = _order(times)
        older_seen = bool(times) and min(times) < cutoff
        if not page.has_more or not page.generations:
            return _result(best, unknown, pages, complete=True, why="end of list")
        if tail_mode:
            if older_seen:
                return _result(best, unknown, pages, complete=True, why="reached older")
            if offset == 0:
                return _result(best, unknown, pages, complete=True, why="read whole list")
            offset = max(0, offset - page_size)
            continue
        if order == -1 and older_seen:
            return _result(best, unknown, pages, complete=True, why="reached older")
        if pages == 1 and order == 1 and page.count > page_size:
            # Oldest first: the newest are at the end.
            tail_mode = True
            offset = max(page_size, page.count - page_size)
            continue
        offset += len(page.generations)


def _result(
    best: Generation | None, unknown: list[str], pages: int, *, complete: bool, why: str
) -> ReconcileResult:
    if best is not None:
        return ReconcileResult(best, True, pages, "matched request echo")
    if unknown:
        return ReconcileResult(
            None, False, pages, f"cannot rule out {len(unknown)} generation(s) without a full echo"
        )
    return ReconcileResult(None, complete, pages, why)
