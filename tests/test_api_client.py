"""LumaClient on a mocked network: paths, bodies, headers, parsing, error mapping, lifecycle."""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from lumasched.api import (
    CreateRequest,
    GenerationState,
    LumaClient,
    RetryPolicy,
    Timeout,
    VideoRequest,
)
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    TransportError,
    UnprocessableEntityError,
    ValidationError,
)
from tests._api_fixtures import API_KEY, BASE, CAPTURES, GEN_ID, client, mocked, sent

__all__ = ["client", "mocked"]  # fixtures, imported for pytest

GEN = {"id": GEN_ID, "state": "queued", "generation_type": "video", "model": "ray-2"}


@pytest.mark.parametrize(
    ("request_", "body"), [(c[1], c[3]) for c in CAPTURES], ids=[c[0] for c in CAPTURES]
)
async def test_create_sends_the_sdk_body(
    client: LumaClient, mocked: aioresponses, request_: CreateRequest, body: str
) -> None:
    """Every request kind POSTs the captured bytes to its path, with JSON headers and auth."""
    mocked.post(BASE + request_.path, status=201, payload=GEN)
    generation = await client.create(request_)
    assert generation.id == GEN_ID
    (call,) = sent(mocked)
    assert call.kwargs["data"] == body.encode()
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert re.fullmatch(r"lumasched/\S+ aiohttp/\S+ python/\S+", headers["User-Agent"])


async def test_reads_hit_their_paths_and_parse(client: LumaClient, mocked: aioresponses) -> None:
    """get/list/delete/concepts/camera motions/credits/ping use the SDK's paths."""
    mocked.get(f"{BASE}/generations/{GEN_ID}", payload={**GEN, "state": "completed"})
    mocked.get(
        f"{BASE}/generations?limit=10&offset=20",
        payload={"generations": [GEN], "count": 1, "has_more": False, "limit": 10, "offset": 20},
    )
    mocked.delete(f"{BASE}/generations/{GEN_ID}", status=204)
    mocked.get(f"{BASE}/generations/concepts/list", payload=["dolly_zoom", "orbit_left"])
    mocked.get(f"{BASE}/generations/camera_motion/list", payload=["camera orbit left"])
    mocked.get(f"{BASE}/credits", payload={"credit_balance": 12345.0})
    mocked.get(f"{BASE}/ping", payload={"message": "pong"})

    assert (await client.get(GEN_ID)).state is GenerationState.COMPLETED
    page = await client.list(limit=10, offset=20)
    assert (page.count, page.limit, page.offset, page.generations[0].id) == (1, 10, 20, GEN_ID)
    assert await client.delete(GEN_ID) is None
    assert await client.concepts() == ["dolly_zoom", "orbit_left"]
    assert await client.camera_motions() == ["camera orbit left"]
    assert (await client.credits()).credit_balance == 12345.0
    assert (await client.ping()).message == "pong"
    stats = client.stats
    assert (stats.gets, stats.lists, stats.deletes, stats.other_reads) == (1, 1, 1, 4)


async def test_ids_are_path_quoted(client: LumaClient, mocked: aioresponses) -> None:
    """An id like 'a/b c' becomes one quoted segment, as in the SDK."""
    mocked.get(f"{BASE}/generations/a%2Fb%20c", payload={**GEN, "id": "a/b c"})
    assert (await client.get("a/b c")).id == "a/b c"
    ((_, url),) = mocked.requests
    assert url.raw_path.endswith("/generations/a%2Fb%20c")


async def test_empty_id_fails_before_any_request(client: LumaClient, mocked: aioresponses) -> None:
    """An empty id raises ValueError and sends nothing."""
    with pytest.raises(ValueError):
        await client.get("")
    with pytest.raises(ValueError):
        await client.delete("")
    assert not mocked.requests


async def test_iter_generations_walks_every_page(client: LumaClient, mocked: aioresponses) -> None:
    """offset advances by the page's size while has_more is true."""

    def page(ids: list[str], more: bool) -> dict[str, Any]:
        return {"generations": [{**GEN, "id": i} for i in ids], "count": len(ids), "has_more": more}

    mocked.get(f"{BASE}/generations?limit=2&offset=0", payload=page(["a", "b"], True))
    mocked.get(f"{BASE}/generations?limit=2&offset=2", payload=page(["c", "d"], True))
    mocked.get(f"{BASE}/generations?limit=2&offset=4", payload=page(["e"], False))
    assert [g.id async for g in client.iter_generations(page_size=2)] == list("abcde")


async def test_invalid_request_sends_nothing(client: LumaClient, mocked: aioresponses) -> None:
    """create() validates first: a ValidationError, and no POST."""
    with pytest.raises(ValidationError):
        await client.create(VideoRequest("ab"))
    assert not mocked.requests


STATUS_CLASSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (402, APIStatusError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
]


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_create_status_errors(
    client: LumaClient, mocked: aioresponses, status: int, cls: type[APIStatusError]
) -> None:
    """4xx answers to a create raise the SDK-named class with the server's detail."""
    mocked.post(f"{BASE}/generations/video", status=status, payload={"detail": f"status {status}"})
    with pytest.raises(cls) as info:
        await client.create(VideoRequest("abc"), retry_rate_limited=False)
    assert type(info.value) is cls
    assert (info.value.status, info.value.detail) == (status, f"status {status}")
    assert info.value.body == {"detail": f"status {status}"}
    assert f"HTTP {status}: status {status}" in str(info.value)
    assert len(sent(mocked)) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_read_5xx_is_internal_server_error(mocked: aioresponses, status: int) -> None:
    """A 5xx on a read ends as InternalServerError after the retries."""
    mocked.get(f"{BASE}/ping", status=status, payload={"detail": "down"}, repeat=True)
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.for_tests(attempts=2)) as c:
        with pytest.raises(InternalServerError) as info:
            await c.ping()
    assert (info.value.status, info.value.detail) == (status, "down")
    assert len(sent(mocked, "GET")) == 2


async def test_non_json_error_body_becomes_detail(client: LumaClient, mocked: aioresponses) -> None:
    """An HTML or text error page still gives a readable detail."""
    mocked.get(
        f"{BASE}/generations/x", status=404, body="<h1>no such thing</h1>", content_type="text/html"
    )
    with pytest.raises(NotFoundError, match="no such thing"):
        await client.get("x")


async def test_validation_detail_list_is_kept(client: LumaClient, mocked: aioresponses) -> None:
    """A FastAPI-style 422 detail list is kept as compact JSON text."""
    detail = [{"loc": ["body", "prompt"], "msg": "field required"}]
    mocked.post(f"{BASE}/generations/video", status=422, payload={"detail": detail})
    with pytest.raises(UnprocessableEntityError) as info:
        await client.create(VideoRequest("abc"))
    assert info.value.detail == '[{"loc":["body","prompt"],"msg":"field required"}]'


def _http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After-ms": "250"}, 0.25, 0.25),
        ({"Retry-After": "7"}, 7, 7),
        ({"Retry-After": "1.5", "Retry-After-ms": "100"}, 0.1, 0.1),
        ({"Retry-After": "HTTP-DATE+30"}, 25, 31),
        ({"Retry-After": "soon"}, None, None),
    ],
    ids=["ms", "seconds", "ms wins", "http date", "garbage"],
)
async def test_rate_limit_retry_after(
    client: LumaClient,
    mocked: aioresponses,
    headers: dict[str, str],
    low: float | None,
    high: float | None,
) -> None:
    """RateLimitError.retry_after comes from Retry-After-ms, else Retry-After (s or date)."""
    # The date is built when the test runs, not at collection, so a long suite cannot age it.
    headers = {k: _http_date(30) if v == "HTTP-DATE+30" else v for k, v in headers.items()}
    mocked.post(
        f"{BASE}/generations/video", status=429, payload={"detail": "slow down"}, headers=headers
    )
    with pytest.raises(RateLimitError) as info:
        await client.create(VideoRequest("abc"), retry_rate_limited=False)
    if low is None:
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after is not None and low <= info.value.retry_after <= high


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("api.test", 443, True, True, None, None, None),
                OSError(111, "Connection refused"),
            ),
            ConnectError,
        ),
        (aiohttp.ConnectionTimeoutError(), ConnectError),
        (aiohttp.ServerTimeoutError("read timed out"), APITimeoutError),
        (builtins.TimeoutError(), APITimeoutError),
        (aiohttp.ServerDisconnectedError(), TransportError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), TransportError),
    ],
    ids=["refused", "connect timeout", "read timeout", "asyncio timeout", "disconnected", "reset"],
)
async def test_transport_errors_map_at_one_boundary(
    mocked: aioresponses, exc: Exception, cls: type[TransportError]
) -> None:
    """aiohttp failures become lumasched transport errors, raised from the original."""
    mocked.get(f"{BASE}/credits", exception=exc, repeat=True)
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.never()) as c:
        with pytest.raises(cls) as info:
            await c.credits()
    assert type(info.value) is cls
    assert info.value.__cause__ is exc
    assert (info.value.method, info.value.url) == ("GET", "/credits")


async def test_unreadable_success_is_a_transport_error(mocked: aioresponses) -> None:
    """A 200 whose body is not what the API documents raises TransportError."""
    mocked.get(f"{BASE}/credits", body="not json", repeat=True)
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.never()) as c:
        with pytest.raises(TransportError, match="unexpected answer"):
            await c.credits()


async def test_key_never_appears(mocked: aioresponses, caplog: pytest.LogCaptureFixture) -> None:
    """Neither repr, errors (with causes and tracebacks) nor logs show the API key."""
    caplog.set_level(logging.DEBUG)
    mocked.get(f"{BASE}/generations/x", status=401, payload={"detail": "Invalid API key"})
    mocked.post(f"{BASE}/generations/video", exception=builtins.TimeoutError())
    mocked.get(f"{BASE}/ping", exception=aiohttp.ServerDisconnectedError(), repeat=True)
    seen: list[str] = []
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.for_tests(2)) as c:
        seen += [repr(c), str(c), repr(c.stats), repr(vars(c))]
        for call in (c.get("x"), c.create(VideoRequest("abc")), c.ping()):
            with pytest.raises(Exception) as info:
                await call
            seen += [str(info.value), repr(info.value)]
            seen += traceback.format_exception(info.value)
            seen.append(repr(getattr(info.value, "__dict__", {})))
    seen.append(caplog.text)
    assert caplog.text
    leaked = [text for text in seen if API_KEY in text]
    assert not leaked


async def test_key_stays_out_of_a_malformed_answer_s_exception_chain() -> None:
    """An unparsable HTTP answer raises TransportError whose aiohttp cause does not hold the key."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        base = f"http://127.0.0.1:{port}/v1"
        async with LumaClient(API_KEY, base, retry=RetryPolicy.never()) as c:
            with pytest.raises(TransportError) as info:
                await c.ping()
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert isinstance(chain[1], aiohttp.ClientResponseError)
    assert not [e for e in chain if API_KEY in repr(e) + str(e) + repr(vars(e))]


async def test_key_and_base_url_from_environment(
    mocked: aioresponses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LUMAAI_API_KEY and LUMAAI_BASE_URL are used when no arguments are given."""
    monkeypatch.setenv("LUMAAI_API_KEY", "lm-ENV")
    monkeypatch.setenv("LUMAAI_BASE_URL", "https://env.test/v1/")
    mocked.get("https://env.test/v1/ping", payload={"message": "pong"})
    async with LumaClient() as c:
        await c.ping()
    ((_, url),) = mocked.requests
    assert url == URL("https://env.test/v1/ping")
    assert sent(mocked, "GET")[0].kwargs["headers"]["Authorization"] == "Bearer lm-ENV"


def test_missing_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere: ConfigurationError naming LUMAAI_API_KEY."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="LUMAAI_API_KEY"):
        LumaClient()


async def test_lifecycle(mocked: aioresponses) -> None:
    """Use outside `async with` and reopening are refused; closing twice is fine."""
    c = LumaClient(API_KEY, BASE)
    with pytest.raises(RuntimeError, match="async with"):
        await c.ping()
    async with c:
        pass
    await c.aclose()
    with pytest.raises(RuntimeError, match="reopened"):
        await c.__aenter__()
    with pytest.raises(RuntimeError, match="closed"):
        await c.ping()


async def test_timeouts_default_and_sync_image(client: LumaClient, mocked: aioresponses) -> None:
    """Connect 5 s / read 60 s; a sync image gets a read timeout beyond its sync_timeout."""
    from lumasched.api import ImageRequest

    mocked.post(f"{BASE}/generations/image", status=201, payload=GEN, repeat=True)
    await client.create(ImageRequest("abc"))
    await client.create(ImageRequest("abc", sync=True, sync_timeout=120))
    first, second = sent(mocked)
    assert (first.kwargs["timeout"].sock_connect, first.kwargs["timeout"].sock_read) == (5, 60)
    assert second.kwargs["timeout"].sock_read > 120
    assert client.timeout == Timeout(5.0, 60.0)


async def test_stats_count_creates_by_kind(client: LumaClient, mocked: aioresponses) -> None:
    """stats counts requests, creates per kind and 429s."""
    from lumasched.api import ImageRequest

    mocked.post(f"{BASE}/generations/image", status=201, payload=GEN)
    mocked.post(f"{BASE}/generations/video", status=429, payload={"detail": "busy"})
    mocked.post(f"{BASE}/generations/video", status=201, payload=GEN)
    await client.create(ImageRequest("abc"))
    await client.create(VideoRequest("abc"))
    stats = client.stats
    assert dict(stats.creates) == {"image": 1, "video": 2}
    assert (stats.requests, stats.rate_limited, stats.retries, stats.total_creates) == (3, 1, 1, 3)
    assert isinstance(stats.creates, dict) and stats.creates is not client.stats.creates


async def test_ambiguous_create_carries_what_was_sent(
    client: LumaClient, mocked: aioresponses
) -> None:
    """AmbiguousCreateError has the path, the body, when it was sent, and the cause."""
    mocked.post(f"{BASE}/generations/video", status=502, payload={"detail": "bad gateway"})
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create(VideoRequest("abc"))
    err = info.value
    assert (err.path, err.body) == ("/generations/video", {"model": "ray-2", "prompt": "abc"})
    assert isinstance(err.cause, InternalServerError) and err.__cause__ is err.cause
    assert abs(err.sent_at - datetime.now(UTC).timestamp()) < 5
    assert client.stats.ambiguous_creates == 1
