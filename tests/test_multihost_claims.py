"""``ClaimStore`` against a real redis-server: who may work an item, and when."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from lumasched.claims import Claim, ClaimRecord, ClaimStatus, ClaimStore, Reseed
from tests._redis_fixtures import RedisServer, redis_process, redis_server

__all__ = ["redis_process", "redis_server"]

pytestmark = pytest.mark.redis

BODY = {"prompt": "a lighthouse at dawn", "model": "photon-1"}


@pytest.fixture
async def client(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def manifest() -> str:
    return uuid.uuid4().hex[:16]


async def claim_once_lapsed(worker: ClaimStore, key: str, timeout: float = 10.0) -> Claim:
    """Claim ``key`` as soon as its holder's lease lapses (on Redis time): no fixed
    sleep that a busy machine could make too short. A TAKEN answer changes nothing."""
    with anyio.fail_after(timeout):
        while (claim := await worker.claim(key)).status is ClaimStatus.TAKEN:
            await anyio.sleep(max(0.01, claim.expires_in))
    return claim


def store(client: aioredis.Redis, manifest: str, owner: str, ttl: float = 30.0) -> ClaimStore:
    """A worker that never heartbeats (not entered): its claims lapse after ``ttl``."""
    return ClaimStore(client, api_key="sk-claims", manifest=manifest, owner=owner, ttl=ttl)


async def test_an_item_is_claimed_by_one_worker_at_a_time(
    client: aioredis.Redis, manifest: str
) -> None:
    """A live claim makes the item TAKEN for everyone else; its holder may claim again."""
    a, b = store(client, manifest, "a"), store(client, manifest, "b")
    assert (await a.claim("x")).status is ClaimStatus.CLAIMED
    taken = await b.claim("x")
    assert taken.status is ClaimStatus.TAKEN and 0 < taken.expires_in <= 30
    assert taken.record.owner == "a"
    assert (await a.claim("x")).status is ClaimStatus.CLAIMED


async def test_an_expired_claim_is_adopted_with_what_its_holder_recorded(
    client: aioredis.Redis, manifest: str
) -> None:
    """Once the holder's lease lapses another worker adopts the item and gets its
    intent and generation id (to poll, not create again)."""
    dead, heir = store(client, manifest, "dead", ttl=0.2), store(client, manifest, "heir")
    await dead.claim("x")
    assert await dead.before_create("x", body=BODY, sent_at=1000.5, lease_id="lease-1")
    assert await dead.created("x", "gen-1")
    assert (await heir.claim("x")).status is ClaimStatus.TAKEN
    adopted = await claim_once_lapsed(heir, "x")
    assert adopted.status is ClaimStatus.ADOPTED
    record = adopted.record
    assert (record.owner, record.state, record.generation_id) == ("dead", "submitted", "gen-1")
    assert (record.intent_body, record.intent_at, record.lease_id) == (BODY, 1000.5, "lease-1")


async def test_a_worker_that_lost_its_claim_may_not_send_the_create(
    client: aioredis.Redis, manifest: str
) -> None:
    """The intent is fenced: after a take-over the late holder is refused."""
    late, heir = store(client, manifest, "late", ttl=0.2), store(client, manifest, "heir")
    await late.claim("x")
    assert (await claim_once_lapsed(heir, "x")).status is ClaimStatus.ADOPTED
    assert not await late.before_create("x", body=BODY, sent_at=1.0, lease_id="l")
    assert await heir.before_create("x", body=BODY, sent_at=2.0, lease_id="l2")


async def test_a_clean_exit_hands_unfinished_items_over_at_once(
    client: aioredis.Redis, manifest: str
) -> None:
    """Leaving the context releases held claims: no wait for the TTL."""
    async with store(client, manifest, "leaving") as leaving:
        await leaving.claim("x")
        assert await leaving.created("x", "gen-1")
    adopted = await store(client, manifest, "heir").claim("x")
    assert adopted.status is ClaimStatus.ADOPTED and adopted.record.generation_id == "gen-1"


async def test_the_heartbeat_keeps_claims_alive(client: aioredis.Redis, manifest: str) -> None:
    """A live worker's claims outlast many TTLs."""
    other = store(client, manifest, "other")
    async with store(client, manifest, "alive", ttl=1.0) as alive:
        await alive.claim("x")
        # checked all along, not once after a sleep: it never lapsed in 2.2 TTLs
        until = time.monotonic() + 2.2
        while time.monotonic() < until:
            assert (await other.claim("x")).status is ClaimStatus.TAKEN
            await anyio.sleep(0.05)


async def test_finished_items_are_done_for_everyone(client: aioredis.Redis, manifest: str) -> None:
    """A completed or failed item is DONE, with where its file is or why it failed."""
    a, b = store(client, manifest, "a"), store(client, manifest, "b")
    await a.claim("x")
    await a.complete("x", generation_id="gen-1", path="/out/x.mp4", sha256="ab", bytes=3)
    await a.claim("y")
    await a.fail("y", reason="moderated", error_type="GenerationFailed")
    done = await b.claim("x")
    assert done.status is ClaimStatus.DONE
    assert (done.record.path, done.record.sha256, done.record.host) == ("/out/x.mp4", "ab", a.host)
    failed = await b.claim("y")
    assert failed.status is ClaimStatus.DONE and failed.record.reason == "moderated"
    assert {k: c.status for k, c in (await b.peek(["x", "y", "z"])).items()} == {
        "x": ClaimStatus.DONE,
        "y": ClaimStatus.DONE,
    }


async def test_reconcile_never_adopts_another_item_s_generation(
    client: aioredis.Redis, manifest: str
) -> None:
    """A listed generation is refused for an item while another item owns it, or while
    another live worker's create of the same body awaits its answer."""
    a, b = store(client, manifest, "a"), store(client, manifest, "b")
    await a.claim("twin-1")
    await b.claim("twin-2")
    assert await a.before_create("twin-1", body=BODY, sent_at=1.0, lease_id="l1")
    assert not await b.found("twin-2", "gen-1", BODY), "twin-1's create is in flight"
    assert await a.created("twin-1", "gen-1")
    assert await b.taken_generations("twin-2") == frozenset({"gen-1"})
    assert not await b.found("twin-2", "gen-1", BODY), "gen-1 is twin-1's"
    assert await b.found("twin-2", "gen-2", BODY)
    assert (await b.peek(["twin-2"]))["twin-2"].record.generation_id == "gen-2"


async def test_the_same_item_with_another_request_is_another_claim(
    client: aioredis.Redis, manifest: str
) -> None:
    """An item is only done for the request that was made: the same id with another
    request digest is free (and the first request stays done)."""
    a, b = store(client, manifest, "a"), store(client, manifest, "b")
    await a.claim("shot-0", digest="a" * 16)
    await a.complete("shot-0", generation_id="gen-1", path="/a/shot-0.mp4", sha256="x", bytes=1)
    assert (await b.claim("shot-0", digest="b" * 16)).status is ClaimStatus.CLAIMED
    done = await b.claim("shot-0", digest="a" * 16)
    assert done.status is ClaimStatus.DONE and done.record.item == "shot-0"


async def test_a_lost_state_is_re_seeded_by_a_worker_alone(redis_process: RedisServer) -> None:
    """After a FLUSH (a restart without persistence) a worker that never saw another
    site puts back what it holds and what its journal knows, and goes on at once:
    its held claim is still fenced as its own, finished items stay done."""
    redis = aioredis.Redis.from_url(redis_process.url)
    try:
        worker = store(redis, "m", "w")
        finished = ClaimRecord("y", state="completed", path="/out/y.png", sha256="s")

        async def journal() -> list[Reseed]:
            return [Reseed("y", None, finished)]

        worker.reseed = journal
        await worker.claim("x")
        await redis.flushall()
        assert (await worker.claim("z")).status is ClaimStatus.CLAIMED
        assert worker.losses == 1
        assert await worker.before_create("x", body=BODY, sent_at=1.0, lease_id="l")
        assert (await store(redis, "m", "other").claim("x")).status is ClaimStatus.TAKEN
        done = await store(redis, "m", "other").claim("y")
        assert done.status is ClaimStatus.DONE and done.record.path == "/out/y.png"
    finally:
        await redis.aclose()


async def test_items_nobody_re_seeds_wait_for_a_gone_site(redis_process: RedisServer) -> None:
    """Two sites worked the batch; after the loss only one comes back. New items
    wait for the grace, then are UNKNOWN (naming the gone site) instead of being
    created again; importing that site's record settles it."""
    redis = aioredis.Redis.from_url(redis_process.url)
    try:
        live = ClaimStore(redis, api_key="sk-claims", manifest="m", owner="live", ttl=0.6)
        gone = ClaimStore(
            redis, api_key="sk-claims", manifest="m", owner="gone", ttl=0.6,
            site_label="host-b:/data/run",
        )  # fmt: skip
        await gone.claim("a")
        await live.claim("b")
        await live.claim("c")  # the heartbeat (or any call) learns the sites
        await redis.flushall()
        waited = anyio.current_time()
        unknown = await live.claim("d")
        assert anyio.current_time() - waited >= 0.25, "the other site's grace to re-seed"
        assert unknown.status is ClaimStatus.UNKNOWN
        assert unknown.record.owner == "host-b:/data/run"
        assert (await live.claim("b")).status is ClaimStatus.CLAIMED, "re-seeded: still ours"
        importer = ClaimStore(redis, api_key="sk-claims", manifest="m", owner="import")
        made = ClaimRecord("a", state="completed", path="/b/a.png")
        assert await importer.put_back([Reseed("a", None, made)], settle=True) == 1
        recovery = await live.recovery()
        assert not recovery["lost"] and "import" not in recovery["sites"], "not a site"
        assert (await live.claim("a")).status is ClaimStatus.DONE
        assert (await live.claim("d")).status is ClaimStatus.CLAIMED
    finally:
        await redis.aclose()


async def test_a_gone_site_that_runs_again_settles_the_wait(redis_process: RedisServer) -> None:
    """The gone site's next process re-seeds from its journal when it joins: the
    items that waited become claimable without an import."""
    redis = aioredis.Redis.from_url(redis_process.url)
    try:
        live = ClaimStore(redis, api_key="sk-claims", manifest="m", owner="live", ttl=0.6)
        first = ClaimStore(
            redis, api_key="sk-claims", manifest="m", owner="b1", ttl=0.6, site="site-b"
        )
        await first.claim("a")
        await live.claim("b")
        await live.claim("c")
        await redis.flushall()
        assert (await live.claim("d")).status is ClaimStatus.UNKNOWN
        again = ClaimStore(
            redis, api_key="sk-claims", manifest="m", owner="b2", ttl=0.6, site="site-b"
        )

        async def journal() -> list[Reseed]:
            return [Reseed("a", None, ClaimRecord("a", state="failed", reason="moderated"))]

        again.reseed = journal
        assert (await again.claim("e")).status is ClaimStatus.CLAIMED
        assert (await live.claim("a")).status is ClaimStatus.DONE
        assert (await live.claim("d")).status is ClaimStatus.CLAIMED
    finally:
        await redis.aclose()
