"""The batch a user would write with the official SDK: the yardstick for client cost.

``AsyncLumaAI`` with its defaults (``max_retries=2``), an ``asyncio.Semaphore``
held from the create until the file is on disk, a poll-every-N-seconds loop on
``generations.get``, and the asset streamed to disk with ``httpx``. Nothing here
is tuned: it is the obvious code, so the comparison is the one users would make.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import lumaai

from benchmarks.manifest_gen import item

TERMINAL = ("completed", "failed")


@dataclass
class BaselineResult:
    jobs: int = 0
    completed: int = 0
    failed: int = 0
    creates: int = 0
    gets: int = 0
    bytes: int = 0


async def _one(
    index: int,
    kind: str,
    client: lumaai.AsyncLumaAI,
    http: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    out_dir: Path,
    poll_interval: float,
    result: BaselineResult,
) -> None:
    spec = item(index, kind)
    async with semaphore:
        if kind == "image":
            generation = await client.generations.image.create(
                model="photon-flash-1", prompt=str(spec["prompt"]), aspect_ratio="1:1"
            )
        else:
            generation = await client.generations.video.create(
                model="ray-flash-2",
                prompt=str(spec["prompt"]),
                aspect_ratio="1:1",
                resolution="540p",
                duration="5s",
            )
        result.creates += 1
        while generation.state not in TERMINAL:
            await asyncio.sleep(poll_interval)
            assert generation.id is not None
            generation = await client.generations.get(generation.id)
            result.gets += 1
        if generation.state == "failed" or generation.assets is None:
            result.failed += 1
            return
        url = generation.assets.video or generation.assets.image
        assert url is not None
        target = out_dir / f"{spec['id']}{'.mp4' if kind == 'video' else '.jpg'}"
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    result.bytes += len(chunk)
        result.completed += 1


async def run_baseline(
    base_url: str,
    api_key: str,
    jobs: int,
    out_dir: str,
    *,
    kind: str = "image",
    concurrency: int = 10,
    poll_interval: float = 1.0,
) -> dict[str, Any]:
    """Run ``jobs`` generations the SDK way; returns counters."""
    result = BaselineResult(jobs=jobs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    semaphore = asyncio.Semaphore(concurrency)
    async with (
        lumaai.AsyncLumaAI(auth_token=api_key, base_url=base_url) as client,
        httpx.AsyncClient(timeout=60) as http,
    ):
        await asyncio.gather(
            *(
                _one(i, kind, client, http, semaphore, out, poll_interval, result)
                for i in range(jobs)
            )
        )
    return asdict(result)
