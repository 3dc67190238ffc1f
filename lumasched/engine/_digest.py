"""The digest that identifies a request as submitted, to notice edits between runs."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from lumasched.api import CreateRequest, request_from_dict, request_to_dict
from lumasched.errors import LumaError

if TYPE_CHECKING:
    from lumasched.store.journal import JournalRecord

__all__ = ["recorded_digest", "request_digest"]


def request_digest(request: CreateRequest) -> str:
    """sha256 of ``request`` as submitted, in canonical JSON: its kind and fields
    (references to other jobs as ``job:<key>``, an upscale's source id too),
    without ``callback_url``, which the scheduler may fill in per run."""
    data = request_to_dict(request)
    data.pop("callback_url", None)
    canonical = json.dumps(
        {"kind": request.kind, "request": data},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def recorded_digest(record: JournalRecord) -> str | None:
    """The digest of the request ``record`` was created with: as journalled, or, in
    a journal of lumasched 0.1.0 (no digests), computed from its recorded request
    (None if that no longer reads)."""
    if record.request_digest is not None:
        return record.request_digest
    try:
        return request_digest(request_from_dict(record.kind, record.request))
    except LumaError:
        return None
