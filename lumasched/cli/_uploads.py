"""``lumasched run``'s local input files: where they go (``--upload`` or the
emulator's store), the upload before the batch starts, and the dry-run's list
of what would be uploaded and what is already there."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import attrs

from lumasched.errors import ConfigurationError
from lumasched.inputs import (
    UPLOADS_NAME,
    EmulatorTarget,
    InputFile,
    S3Target,
    UploadLog,
    UploadPlan,
    Uploads,
    UploadTarget,
    parse_s3_url,
)

__all__ = [
    "UploadOptions",
    "need_target",
    "open_uploads",
    "plan_uploads",
    "size",
]


@attrs.frozen
class UploadOptions:
    """``--upload s3://BUCKET/PREFIX``, ``--upload-endpoint``, ``--upload-public-base``."""

    url: str
    endpoint_url: str | None = None
    public_base: str | None = None

    def __attrs_post_init__(self) -> None:
        parse_s3_url(self.url)
        for flag, value in (
            ("--upload-endpoint", self.endpoint_url),
            ("--upload-public-base", self.public_base),
        ):
            if value is not None and not value.startswith(("http://", "https://")):
                raise ConfigurationError(f"{flag} {value!r}: expected an http(s):// URL")

    def target(self) -> S3Target:
        return S3Target(self.url, endpoint_url=self.endpoint_url, public_base=self.public_base)


def size(count: int, nbytes: int) -> str:
    """``3 files (1.2 MB)``."""
    amount = f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:,.1f} kB"
    return f"{count} file{'s' if count != 1 else ''} ({amount})"


def need_target(files: list[InputFile], upload: UploadOptions | None, emulator: bool) -> None:
    """Refuse local files with nowhere to upload them (before anything is sent)."""
    if files and upload is None and not emulator:
        total = sum(f.size for f in files)
        raise ConfigurationError(
            f"the manifest names local files ({size(len(files), total)}): give --upload "
            "s3://BUCKET/PREFIX (any S3-compatible bucket; --upload-endpoint URL for R2, "
            "MinIO or GCS) so the API can fetch them, or run with --emulator"
        )


async def open_uploads(
    stack: AsyncExitStack,
    upload: UploadOptions | None,
    journal_dir: Path,
    emulator: Any = None,
    emulator_key: str = "",
) -> Uploads:
    """The ``Uploads`` of a run, closed with ``stack``: to ``upload``'s bucket when
    given (with the emulator too: a rehearsal of the real uploads), else to the
    emulator's store."""
    target: UploadTarget
    if upload is not None:
        target = await stack.enter_async_context(upload.target())
    else:
        assert emulator is not None
        session = await stack.enter_async_context(aiohttp.ClientSession())
        target = EmulatorTarget(emulator.origin, emulator_key, session)
    log = UploadLog(journal_dir / UPLOADS_NAME)
    stack.callback(log.close)
    return Uploads(target, log)


class _Folder:
    """The in-process emulator's upload folder, read without starting it (dry run)."""

    name = "emulator"

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def key_for(self, sha256: str, suffix: str) -> str:
        return f"{sha256}{suffix}"

    async def exists(self, key: str) -> bool:
        return await anyio.Path(self._folder / key).is_file()

    async def put(self, key: str, path: Path, content_type: str) -> None:
        raise AssertionError("a dry run uploads nothing")

    async def url(self, key: str) -> tuple[str, float | None]:
        raise AssertionError("a dry run signs nothing")


async def plan_uploads(
    files: list[InputFile],
    upload: UploadOptions | None,
    journal_dir: Path,
    emulator_state: Path | None,
) -> UploadPlan:
    """What a run would upload; looks the files up in the log and the target
    (HEAD requests: nothing is written anywhere but the hash cache)."""
    async with AsyncExitStack() as stack:
        target: UploadTarget
        if upload is not None:
            target = await stack.enter_async_context(upload.target())
        else:
            # Only a dry run with --emulator: a plain run starts without the emulator.
            from lumasched.emulator._inputs import uploads_folder

            assert emulator_state is not None
            target = _Folder(uploads_folder(emulator_state))
        # The run's log if there is one (a dry run creates no files).
        path = journal_dir / UPLOADS_NAME
        log = UploadLog(path if await anyio.Path(path).is_file() else ":memory:")
        stack.callback(log.close)
        return await Uploads(target, log).plan(files)
