"""Small local input files for the upload tests: real JPEG/PNG stills (Pillow)
and the first bytes of real video containers."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lumasched import JobResult, LumaClient, Scheduler
from lumasched.api import CreateRequest
from lumasched.emulator import Emulator
from lumasched.errors import LumaError
from lumasched.inputs import Uploads

# An MP4's first box (``ftyp``, brand isom): enough for the container check.
MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
WEBM_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01"


def still(path: Path, color: tuple[int, int, int] = (200, 30, 30), fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), color).save(path, format=fmt)
    return path


def clip(path: Path, head: bytes = MP4_HEAD, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b"\x00" * (size - len(head)))
    return path


async def run_one(
    emu: Emulator, request: CreateRequest, uploads: Uploads | None
) -> tuple[JobResult | None, BaseException | None]:
    """Run one request through a scheduler to its end: (result, None) or (None, error)."""
    async with (
        LumaClient(api_key="lm-key", base_url=emu.base_url) as client,
        Scheduler(client, inputs=uploads) as scheduler,
    ):
        try:
            return await scheduler.submit(request), None
        except LumaError as exc:
            return None, exc
