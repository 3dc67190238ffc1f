"""A manifest against its journal, before a run sends anything: what changed,
what failed, what is left to create, and what that costs.

Each create's intent records a digest of the request as submitted
(``lumasched.engine._digest.request_digest``): the item's own fields, with references to other items
by item id, without the ``callback_url`` the scheduler may add. On a rerun an
item whose request no longer has that digest was edited after its generation
was created. Reporting it done would hand over the old file for a new prompt,
and creating it again costs money, so the run refuses until the user says
which (``--redo-changed``, or restoring the manifest). An item that builds on
a redone item is redone with it: its input is being replaced.

Items a run resets to be created anew (``Journal.restart``):

* changed items, with ``redo_changed``;
* items whose generation failed, with ``retry_failed`` (and items that failed
  because their dependency failed, once that one is retried);
* without asking, because nothing was created and nothing is charged: items
  journalled as failed by lumasched 0.1.0 for a fault that was not theirs (a
  rejected key, an unreachable API), and items refused by the API (400/422)
  whose request was edited since.
"""

from __future__ import annotations

import attrs

from lumasched.api import CreateRequest, family_of, request_to_dict
from lumasched.api._models import REF_PREFIX
from lumasched.engine._digest import recorded_digest, request_digest
from lumasched.engine._restore import rerunnable
from lumasched.manifest import Manifest, ManifestItem, ManifestProblem
from lumasched.pricing import PriceTable, estimate_cost_cents
from lumasched.store.journal import Journal, JournalRecord

__all__ = ["Review", "review", "submitted_request"]

NOT_ITS_FAULT = frozenset(
    {
        "AuthenticationError",
        "PermissionDeniedError",
        "ConnectError",
        "APIUnreachableError",
        "APIStatusError",
        "ConflictError",
    }
)
"""Error types lumasched 0.1.0 journalled as final failures though nothing was
created: the key, the network. Such items are simply pending."""

_REFUSED = frozenset(
    {"BadRequestError", "UnprocessableEntityError", "ValidationError", "NotFoundError"}
)
"""The API refused the item's own request: nothing was created (a 404 counts for
an upscale or audio of a source that does not exist; see ``_wrong_url``)."""

_GENERATION_FAILED = "GenerationFailed"
_DEPENDENCY_FAILED = "DependencyFailed"


def submitted_request(item: ManifestItem) -> CreateRequest:
    """The request the runner submits for ``item`` (references as ``job:<id>``)."""
    return item.resolve(lambda dep: REF_PREFIX + dep)


@attrs.define
class Review:
    """What a rerun of a manifest on a journal would do (and, applied, has set up)."""

    ids: set[str] = attrs.Factory(set)
    """Every item id of the manifest."""
    changed: list[ManifestProblem] = attrs.Factory(list)
    """``FILE:LINE: id: request changed since ...``, one per changed item."""
    changed_cents: float = 0.0
    retryable: list[str] = attrs.Factory(list)
    """Items whose generation failed (``--retry-failed`` tries them again)."""
    retry_cents: float = 0.0
    reset: list[str] = attrs.Factory(list)
    """Items set up to be created anew by this run (changed, retried, freed)."""
    freed: int = 0
    """Items failed for a fault not theirs, or refused and then edited: pending again."""
    to_create: int = 0
    """Items this run would create (new, pending, reset)."""
    create_cents: float = 0.0
    unpriced: int = 0
    completed: int = 0
    in_flight: int = 0
    failed: int = 0
    """Items that stay failed in this run."""


def review(
    manifest: Manifest,
    journal: Journal | None,
    *,
    redo_changed: bool = False,
    retry_failed: bool = False,
    apply: bool = False,
    prices: PriceTable | None = None,
) -> Review:
    """Compare ``manifest`` (checked already) with ``journal``; with ``apply``, reset
    in the journal the items this run creates anew, unless the run is to be
    refused (changed items without ``redo_changed``): then nothing is touched.
    Sends nothing."""
    result = Review()
    redone: set[str] = set()
    """Items created anew in this run: their dependents' inputs change."""
    resets: list[tuple[str, CreateRequest, str]] = []
    for item in manifest.submission_order():
        result.ids.add(item.id)
        request = submitted_request(item)
        record = journal.get(item.id) if journal is not None else None
        reason = _decide(
            manifest.name, item, request, record, redone, result, redo_changed, retry_failed, prices
        )
        if reason is None:
            continue
        if reason != "create":
            redone.add(item.id)
            result.reset.append(item.id)
            resets.append((item.id, request, reason))
        cost = _cost(request, prices)
        if cost is None:
            result.unpriced += 1
        else:
            result.create_cents += cost
        result.to_create += 1
    refused = bool(result.changed) and not redo_changed
    if apply and journal is not None and not refused:
        for key, request, reason in resets:
            journal.restart(
                key,
                request=request_to_dict(request),
                kind=request.kind,
                family=family_of(request.kind, request.model).value,
                reason=reason,
            )
    return result


def _decide(
    file: str,
    item: ManifestItem,
    request: CreateRequest,
    record: JournalRecord | None,
    redone: set[str],
    result: Review,
    redo_changed: bool,
    retry_failed: bool,
    prices: PriceTable | None,
) -> str | None:
    """What this run does with ``item``: ``"create"`` (never sent: created with its
    current request), a reset reason (created anew), or None (resumed or done)."""
    if record is None:
        return "create"
    started = record.generation_id is not None or record.intent_body is not None
    changed_dep = next((dep for dep in item.deps if dep in redone), None)
    if not started:
        if record.state == "cancelled":
            return None
        if record.state != "failed":
            return "create"  # pending: picked up with its current request
        if record.error_type in NOT_ITS_FAULT or _wrong_url(record):
            result.freed += 1
            return "not its fault"
        if record.error_type in _REFUSED and recorded_digest(record) != request_digest(request):
            result.freed += 1
            return "edited after refusal"
        if record.error_type == _DEPENDENCY_FAILED and changed_dep is not None:
            return "dependency retried"
        if retry_failed and record.error_type in (*_REFUSED, _DEPENDENCY_FAILED):
            return "retry-failed"
        result.failed += 1
        return None
    if changed_dep is not None or recorded_digest(record) != request_digest(request):
        redone.add(item.id)  # its dependents change with it, redone or not
        result.changed.append(_changed_problem(file, item, record, changed_dep))
        result.changed_cents += _cost(request, prices) or 0.0
        return "redo-changed" if redo_changed else None
    if record.state == "failed" and record.error_type == _GENERATION_FAILED:
        result.retryable.append(item.id)
        result.retry_cents += _cost(request, prices) or 0.0
        if retry_failed:
            return "retry-failed"
        result.failed += 1
        return None
    if record.state == "completed":
        result.completed += 1
    elif record.state == "failed" and not rerunnable(record):
        result.failed += 1
    else:
        result.in_flight += 1  # followed again (a failed download, a timeout, ...)
    return None


def _wrong_url(record: JournalRecord) -> bool:
    """A 404 to a plain create: the base URL was wrong, not the item (an upscale or
    audio names its source in the path, so there a 404 is the item's)."""
    return record.error_type == "NotFoundError" and record.kind not in ("upscale", "audio")


def _changed_problem(
    file: str, item: ManifestItem, record: JournalRecord, changed_dep: str | None
) -> ManifestProblem:
    if changed_dep is not None:
        what = f"builds on {changed_dep!r}, which changed"
    elif record.generation_id is not None:
        what = f"request changed since generation {record.generation_id} was created"
    else:
        what = "request changed since its create was sent (outcome not yet known)"
    return ManifestProblem(file, item.line, item.id, what)


def _cost(request: CreateRequest, prices: PriceTable | None) -> float | None:
    try:
        return estimate_cost_cents(request.kind, request.to_body(), prices)
    except ValueError:
        return None
