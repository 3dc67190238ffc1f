"""Who is who across hosts: a batch's identity, an item's request digest, and the
Redis field that ties one item to one request (re-exported by ``lumasched.claims``)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lumasched.manifest import Manifest, ManifestItem

__all__ = [
    "batch_id",
    "claim_field",
    "claims_prefix",
    "item_digest",
    "manifest_id",
    "request_digest",
    "split_field",
]

DIGEST_LENGTH = 16


def request_digest(request: Mapping[str, Any]) -> str:
    """Identifies one request (``request_to_dict`` form, as the journal keeps it)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"lumasched-request:" + text.encode()).hexdigest()[:DIGEST_LENGTH]


def item_digest(item: ManifestItem) -> str:
    """The digest of a manifest item's request as the runner submits it (items it
    builds on stand as references), equal to the digest of its journal row."""
    from lumasched.api import request_to_dict
    from lumasched.engine.scheduler import Scheduler

    return request_digest(request_to_dict(item.resolve(Scheduler.ref)))


def batch_id(manifest: Manifest | None = None, *, name: str | None = None) -> str:
    """The identity of a batch across hosts.

    By default a digest of the manifest's content (every item's id and request,
    in order), so two different manifests never share claims whatever their
    file names, and the same manifest started from different paths does.
    ``name`` (``--batch NAME``) names the batch instead: items keep their record
    across edits of the manifest, and an edited item is a new request.
    """
    if name is not None:
        if not name.strip():
            raise ValueError("a batch name must not be empty")
        return "n-" + hashlib.sha256(b"lumasched-batch:" + name.encode()).hexdigest()[:16]
    if manifest is None:
        raise ValueError("batch_id needs a manifest or a name")
    digest = hashlib.sha256(b"lumasched-batch-content:")
    for item in manifest:
        digest.update(f"{item.id}\0{item_digest(item)}\n".encode())
    return "c-" + digest.hexdigest()[:16]


def manifest_id(manifest: str | os.PathLike[str]) -> str:
    """A manifest's identity by its file *name* (lumasched 0.1.0). Two different
    batches with the same file name share it: use ``batch_id`` instead."""
    name = Path(manifest).name
    return hashlib.sha256(b"lumasched-manifest:" + name.encode()).hexdigest()[:16]


def claims_prefix(namespace: str, account: str, manifest: str) -> str:
    return f"{namespace}:{{{account}:m:{manifest}}}"


def claim_field(key: str, digest: str | None) -> str:
    """The Redis field of item ``key`` made with the request of ``digest``."""
    return f"{key}@{digest}" if digest else key


def split_field(field: str) -> tuple[str, str | None]:
    """``claim_field`` undone: (item key, request digest or None)."""
    key, sep, digest = field.rpartition("@")
    if sep and len(digest) == DIGEST_LENGTH and all(c in "0123456789abcdef" for c in digest):
        return key, digest
    return field, None
