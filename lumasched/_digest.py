"""The digest that identifies a request as submitted, to notice edits between runs."""

from __future__ import annotations

import hashlib
import json

from lumasched.api import CreateRequest, request_to_dict

__all__ = ["request_digest"]


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
