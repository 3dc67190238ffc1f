"""The seam the engine leaves for local input files: what ``Scheduler`` asks of
an input resolver just before a create is sent. ``lumasched.inputs.Uploads``
fills it; the engine never imports the inputs package (nor its S3 client)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lumasched.api import CreateRequest

__all__ = ["InputResolver"]


class InputResolver(Protocol):
    """Turns a request's local files (``file://`` URLs) into URLs the server can fetch."""

    async def resolve(self, request: CreateRequest) -> CreateRequest:
        """``request`` ready to send; raises ``ValidationError`` for an unusable file
        and ``UploadError`` when it cannot be stored. Nothing is sent either way."""
        ...
