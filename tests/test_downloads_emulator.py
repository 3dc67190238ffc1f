"""Downloads from the emulator's asset server over real sockets: cuts, expiry, cancellation."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from lumasched.api import AssetStream, Generation, LumaClient, RetryPolicy, VideoRequest
from lumasched.emulator import Emulator
from lumasched.engine.downloads import Downloader, part_path


@asynccontextmanager
async def finished_video(**config: Any) -> AsyncIterator[tuple[Emulator, LumaClient, Generation]]:
    """An emulator, a client, and one completed video generation."""
    async with (
        Emulator(fixed_latency=0.05, seed=11, **config) as emu,
        LumaClient("test-key", emu.base_url, retry=RetryPolicy.for_tests()) as client,
    ):
        generation = await client.create(VideoRequest("a whale", aspect_ratio="16:9"))
        with anyio.fail_after(5):
            while not generation.is_terminal:
                await anyio.sleep(0.02)
                generation = await client.get(generation.id)
        assert generation.state == "completed" and generation.asset_url
        yield emu, client, generation


async def reference_sha(client: LumaClient, url: str) -> tuple[str, int]:
    async with client.open_asset(url) as stream:
        data = await stream.read()
    return hashlib.sha256(data).hexdigest(), len(data)


async def test_a_video_downloads_whole_and_playable(tmp_path: Path) -> None:
    """The asset lands at the target as an MP4 with the sha256 of its bytes."""
    async with finished_video(video_padding_bytes=200_000) as (_, client, generation):
        assert generation.asset_url is not None
        result = await Downloader(client).download(generation.asset_url, tmp_path / "v.mp4")
        data = (tmp_path / "v.mp4").read_bytes()
    assert data[4:8] == b"ftyp"
    assert result.bytes == len(data) > 200_000
    assert result.sha256 == hashlib.sha256(data).hexdigest()


class CutOnce:
    """The real client, with the emulator cutting only the first transfer."""

    def __init__(self, client: LumaClient, emu: Emulator) -> None:
        self._client = client
        self._emu = emu
        self.starts: list[int] = []

    @asynccontextmanager
    async def open_asset(self, url: str, *, start: int = 0) -> AsyncIterator[AssetStream]:
        self.starts.append(start)
        async with self._client.open_asset(url, start=start) as stream:
            self._emu.set_faults(cut_downloads=0.0)
            yield stream


async def test_a_cut_transfer_resumes_to_the_right_bytes(tmp_path: Path) -> None:
    """The emulator cuts the body half way; a Range request finishes it, bytes identical."""
    async with finished_video(video_padding_bytes=300_000) as (emu, client, generation):
        url = generation.asset_url
        assert url is not None
        want = await reference_sha(client, url)
        emu.set_faults(cut_downloads=1.0)
        cutting = CutOnce(client, emu)
        downloader = Downloader(cutting, backoff=0.0)  # type: ignore[arg-type]
        result = await downloader.download(url, tmp_path / "v.mp4", expected_sha256=want[0])
        assert emu.inspect.downloads_cut == 1
    assert (result.sha256, result.bytes) == want
    assert len(cutting.starts) == 2 and 0 < cutting.starts[1] < want[1]
    assert downloader.stats().resumes == 1


async def test_an_expired_url_is_refreshed_from_the_generation(tmp_path: Path) -> None:
    """An expired asset URL (403) is replaced by re-fetching the generation."""
    async with finished_video() as (emu, client, generation):
        url = generation.asset_url
        assert url is not None
        want = await reference_sha(client, url)
        emu.expire_asset_urls()

        async def refresh() -> str:
            fresh = (await client.get(generation.id)).asset_url
            assert fresh is not None
            return fresh

        downloader = Downloader(client, backoff=0.0)
        result = await downloader.download(url, tmp_path / "v.mp4", refresh_url=refresh)
        assert emu.inspect.expired_url_hits == 1
    assert (result.sha256, result.bytes) == want
    assert downloader.stats().refreshes == 1


async def test_a_cancelled_slow_download_resumes_later(tmp_path: Path) -> None:
    """Cancelled mid-way through a slow transfer: no target; the next call resumes the part."""
    async with finished_video(video_padding_bytes=400_000) as (emu, client, generation):
        url = generation.asset_url
        assert url is not None
        want = await reference_sha(client, url)
        emu.set_faults(download_bytes_per_second=1_000_000)
        target = tmp_path / "v.mp4"
        downloader = Downloader(client, backoff=0.0, chunk_size=8192)
        with anyio.move_on_after(0.15):
            await downloader.download(url, target)
        assert not target.exists()
        kept = part_path(target).stat().st_size
        assert 0 < kept < want[1]
        emu.set_faults(download_bytes_per_second=None)
        result = await downloader.download(url, target)
    assert (result.sha256, result.bytes) == want
    assert downloader.stats().resumes == 1
    assert not part_path(target).exists()
