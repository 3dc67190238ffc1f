"""A failed status read has one retry layer: the poller's, not the client's too."""

from __future__ import annotations

import anyio
import pytest
from aioresponses import aioresponses

from lumasched.api import Generation, LumaClient
from lumasched.engine.poller import Poller
from lumasched.errors import InternalServerError
from tests._api_fixtures import BASE, GEN_ID, client, mocked, sent

__all__ = ["client", "mocked"]  # fixtures, imported for pytest

GEN = {"id": GEN_ID, "state": "dreaming", "generation_type": "video", "model": "ray-2"}
DONE = {**GEN, "state": "completed", "assets": {"video": "https://cdn.test/v.mp4"}}
URL = f"{BASE}/generations/{GEN_ID}"


async def test_a_failed_status_read_costs_one_request(
    client: LumaClient, mocked: aioresponses
) -> None:
    """The poller's get that meets a 500 is sent once (the client, whose policy allows
    three attempts, does not retry it); the poller's next check finds it completed."""
    mocked.get(URL, status=500, payload={"detail": "boom"})
    mocked.get(URL, status=200, payload=DONE)
    seen: list[Generation] = []

    async def on_update(g: Generation) -> None:
        seen.append(g)

    poller = Poller(client, first_probe=0.01, min_interval=0.01, max_interval=0.05)
    poller.watch(GEN_ID, key=("ray-2", None, None), on_update=on_update)
    with anyio.fail_after(5):
        while poller.stats().errors == 0:
            await poller.poll_once()
            await anyio.sleep(0.005)
        assert len(sent(mocked, "GET")) == 1
        while not seen:
            await poller.poll_once()
            await anyio.sleep(0.005)
    assert seen[-1].state == "completed"
    assert len(sent(mocked, "GET")) == 2
    assert poller.stats().errors == 1


async def test_direct_reads_keep_the_clients_retries(
    client: LumaClient, mocked: aioresponses
) -> None:
    """Library code calling ``LumaClient.get`` itself still gets the policy's attempts."""
    for _ in range(3):
        mocked.get(URL, status=500, payload={"detail": "boom"})
    with pytest.raises(InternalServerError):
        await client.get(GEN_ID)
    assert len(sent(mocked, "GET")) == 3
