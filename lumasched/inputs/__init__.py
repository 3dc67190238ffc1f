"""Local files as inputs: checked, uploaded once to storage the user owns, and
referenced by URL.

The Dream Machine API takes media only as URLs it can fetch. A request (or a
manifest item) may name a local file instead -- a ``file://`` URL, or a
``pathlib.Path`` where a URL goes -- and ``Uploads`` stores each file once
under its sha256 (``S3Target`` for any S3-compatible bucket, ``EmulatorTarget``
offline), journals it in the upload log, and swaps in the stored URL right
before the create is sent (``Scheduler(inputs=uploads)``).
"""

from __future__ import annotations

from lumasched.api._inputs import (
    MediaKind,
    MediaSlot,
    is_local,
    local_path,
    local_url,
    media_slots,
    replace_media_urls,
)
from lumasched.inputs._checks import InputFile, InputProblem, check_input
from lumasched.inputs._s3 import S3Target, parse_s3_url
from lumasched.inputs._targets import EMULATOR_UPLOADS_PATH, EmulatorTarget, UploadTarget
from lumasched.inputs._uploads import UploadPlan, Uploads, UploadStats
from lumasched.store.uploads import UPLOADS_NAME, UploadLog, UploadRecord

__all__ = [
    "EMULATOR_UPLOADS_PATH",
    "UPLOADS_NAME",
    "EmulatorTarget",
    "InputFile",
    "InputProblem",
    "MediaKind",
    "MediaSlot",
    "S3Target",
    "UploadLog",
    "UploadPlan",
    "UploadRecord",
    "UploadStats",
    "UploadTarget",
    "Uploads",
    "check_input",
    "is_local",
    "local_path",
    "local_url",
    "media_slots",
    "parse_s3_url",
    "replace_media_urls",
]
