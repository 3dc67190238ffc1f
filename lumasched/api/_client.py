"""``LumaClient``: the asyncio client for every Dream Machine endpoint.

One ``aiohttp.ClientSession`` per client, opened by ``async with`` and never
reopened. Reads and deletes are retried (connection errors, timeouts, 408, 409,
429, 5xx, or whatever ``x-should-retry`` says). A create is retried only when the
server surely did not act on it: the connection was never made, or it answered
429. Once a create may have reached the server (a timeout after sending, a
dropped connection, a 5xx, an unreadable answer) the client raises
``AmbiguousCreateError`` instead, because the official SDK's blind re-POST starts
duplicate, billed generations.
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal, TypeVar

import aiohttp
import attrs
from yarl import URL

from lumasched._config import (
    API_KEY_HELP,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_REQUEST_DEADLINE,
    Settings,
)
from lumasched.api._assets import AssetStream, open_stream
from lumasched.api._converter import (
    dumps_body,
    request_body,
    structure_credits,
    structure_generation,
    structure_page,
    structure_ping,
    structure_strings,
)
from lumasched.api._inputs import is_local, media_slots
from lumasched.api._models import (
    CreateRequest,
    Credits,
    Generation,
    GenerationPage,
    ImageRequest,
    Ping,
    quote_id,
)
from lumasched.api._retry import RetryPolicy
from lumasched.api._transport import (
    decode_body,
    error_for_status,
    parse_retry_after,
    translate_errors,
    user_agent,
)
from lumasched.errors import (
    AmbiguousCreateError,
    APIStatusError,
    ConfigurationError,
    ConnectError,
    LumaError,
    Problem,
    RateLimitError,
    ResponseTooLargeError,
    TransportError,
    ValidationError,
)

__all__ = ["ClientStats", "LumaClient", "Timeout"]

log = logging.getLogger("lumasched.api")

T = TypeVar("T")
_Op = Literal["create", "get", "list", "delete", "read"]

_RETRY_STATUSES = frozenset({408, 409, 429})
_SYNC_READ_MARGIN = 15.0


@attrs.frozen
class Timeout:
    """Per-request timeouts in seconds (the SDK's defaults: connect 5, read 60).

    ``read`` bounds the wait for the next bytes; ``total`` bounds a whole API
    request, so a server trickling its answer cannot hold it for ever (``None``:
    no bound). Asset downloads are bounded by ``read`` and their size only.
    """

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    total: float | None = DEFAULT_REQUEST_DEADLINE

    def aiohttp(
        self, *, read: float | None = None, total: float | None = None, whole: bool = True
    ) -> aiohttp.ClientTimeout:
        """The aiohttp timeout of one request; ``whole=False`` drops the total bound."""
        return aiohttp.ClientTimeout(
            total=(total or self.total) if whole else None,
            sock_connect=self.connect,
            sock_read=self.read if read is None else read,
        )


@attrs.frozen
class ClientStats:
    """A snapshot of what a client has done (``client.stats``). Attempts, not calls:
    a retried read counts twice, once in its operation and once in ``retries``."""

    requests: int = 0
    creates: Mapping[str, int] = attrs.field(factory=dict)
    gets: int = 0
    lists: int = 0
    deletes: int = 0
    other_reads: int = 0
    retries: int = 0
    rate_limited: int = 0
    ambiguous_creates: int = 0
    errors: int = 0
    assets_opened: int = 0
    download_bytes: int = 0

    @property
    def total_creates(self) -> int:
        return sum(self.creates.values())


class _Credential(str):
    """The Authorization header value; its repr hides it (debuggers and ``vars()`` use reprs)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'Bearer ***'"


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class _Failed(Exception):
    """Carries an attempt's error to the retry loop with the verdict for this operation."""

    def __init__(
        self, error: LumaError, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


@attrs.frozen
class _Answer:
    status: int
    headers: Mapping[str, str]
    raw: bytes


class LumaClient:
    """Async client for the Luma Dream Machine API.

    ``api_key`` and ``base_url`` default to ``LUMAAI_API_KEY`` and
    ``LUMAAI_BASE_URL`` (then ``https://api.lumalabs.ai/dream-machine/v1``), the
    official SDK's names::

        async with LumaClient() as client:
            generation = await client.create(VideoRequest("a teddy bear", duration="5s"))
            generation = await client.get(generation.id)

    ``retry`` governs reads, deletes and the safe create retries; ``timeout`` is a
    ``Timeout`` or a read timeout in seconds. Every API answer is read up to
    ``settings.max_response_bytes`` (a larger one raises
    ``ResponseTooLargeError``), within ``settings.request_deadline`` seconds in
    all. The key never appears in a repr, an error or a log line.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        settings: Settings | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeout | float | None = None,
        max_connections: int = 100,
    ) -> None:
        if settings is None:
            settings = Settings.from_env(api_key=api_key, base_url=base_url)
        else:
            settings = attrs.evolve(
                settings,
                api_key=api_key or settings.api_key,
                base_url=(base_url or settings.base_url).rstrip("/"),
            )
        if not settings.api_key:
            raise ConfigurationError(f"no API key: {API_KEY_HELP}")
        self._auth = _Credential(f"Bearer {settings.api_key}")
        self.base_url = settings.base_url
        self.retry = retry if retry is not None else RetryPolicy()
        if isinstance(timeout, int | float):
            # A longer read timeout than the total would never fire: raise the total.
            read = float(timeout)
            total = max(settings.request_deadline, settings.connect_timeout + read)
            timeout = Timeout(settings.connect_timeout, read, total=total)
        self.timeout = timeout or Timeout(
            settings.connect_timeout, settings.read_timeout, total=settings.request_deadline
        )
        self.max_response_bytes = settings.max_response_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._state = _State.UNOPENED
        self._counts: Counter[str] = Counter()
        self._creates: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<LumaClient {self.base_url} {self._state.value}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> LumaClient:
        if self._state is not _State.UNOPENED:
            raise RuntimeError("a LumaClient cannot be reopened; create a new one")
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": user_agent()},
            timeout=self.timeout.aiohttp(),
            connector=aiohttp.TCPConnector(limit=self._max_connections),
        )
        self._state = _State.OPEN
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session. Safe to call twice."""
        self._state = _State.CLOSED
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._state is not _State.OPEN or self._session is None:
            raise RuntimeError(
                f"LumaClient is {self._state.value}: use it inside `async with LumaClient(...)`"
            )
        return self._session

    # -- statistics --------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters (cheap; safe to read at any time)."""
        c = self._counts
        return ClientStats(
            requests=c["requests"],
            creates=dict(self._creates),
            gets=c["get"],
            lists=c["list"],
            deletes=c["delete"],
            other_reads=c["read"],
            retries=c["retries"],
            rate_limited=c["rate_limited"],
            ambiguous_creates=c["ambiguous"],
            errors=c["errors"],
            assets_opened=c["assets"],
            download_bytes=c["download_bytes"],
        )

    # -- one HTTP exchange -------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        read_timeout: float | None = None,
        deadline: float | None = None,
    ) -> _Answer:
        session = self._open_session()
        url = URL(self.base_url + path, encoded=True)
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        self._counts["requests"] += 1
        started = time.monotonic()
        with translate_errors(method, path):
            async with session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=self.timeout.aiohttp(read=read_timeout, total=deadline),
                allow_redirects=False,
            ) as response:
                raw = await _read_capped(response, self.max_response_bytes, method, path)
                answer = _Answer(response.status, response.headers, raw)
        log.debug("%s %s -> %d in %.3fs", method, path, answer.status, time.monotonic() - started)
        return answer

    def _note_failure(self, exc: BaseException, wait: float) -> None:
        self._counts["retries"] += 1
        error = exc.error if isinstance(exc, _Failed) else exc
        log.info("retrying in %.2fs after %s", wait, error)

    async def _run(self, attempt: Callable[[], Any], *, retry: bool = True) -> Any:
        try:
            return await self.retry.call(
                attempt,
                should_retry=lambda exc: retry and isinstance(exc, _Failed) and exc.retryable,
                retry_after=lambda exc: exc.retry_after if isinstance(exc, _Failed) else None,
                on_retry=self._note_failure,
            )
        except _Failed as failed:
            self._counts["errors"] += 1
            raise failed.error from failed.error.__cause__

    # -- reads -------------------------------------------------------------------------

    async def _read(
        self, op: _Op, method: str, path: str, parse: Callable[[Any], T], *, retry: bool = True
    ) -> T:
        async def attempt() -> T:
            self._counts[op] += 1
            try:
                answer = await self._exchange(method, path)
            except ResponseTooLargeError as exc:
                raise _Failed(exc, retryable=False) from exc
            except TransportError as exc:
                raise _Failed(exc, retryable=True) from exc
            if 300 <= answer.status < 400:
                raise _Failed(_redirected(answer, method, path), retryable=False)
            if answer.status >= 400:
                error = error_for_status(
                    answer.status, answer.headers, answer.raw, method=method, url=path
                )
                self._note_status(error)
                raise _Failed(
                    error,
                    retryable=_should_retry_read(answer),
                    retry_after=parse_retry_after(answer.headers),
                )
            if method == "DELETE":
                return parse(None)
            try:
                return parse(decode_body(answer.raw))
            except (ValueError, TypeError) as exc:
                unreadable = TransportError(
                    f"unexpected answer to {method} {path}: {exc}", method=method, url=path
                )
                raise _Failed(unreadable, retryable=True) from exc

        result: T = await self._run(attempt, retry=retry)
        return result

    def _note_status(self, error: APIStatusError) -> None:
        if error.status == 429:
            self._counts["rate_limited"] += 1

    async def get(self, generation_id: str, *, retry: bool = True) -> Generation:
        """``GET /generations/{id}``. ``retry=False``: one attempt, whatever the error
        (for a caller that owns the retry, as the poller does)."""
        path = f"/generations/{quote_id(generation_id)}"
        return await self._read("get", "GET", path, structure_generation, retry=retry)

    async def list(
        self, limit: int = 100, offset: int = 0, *, retry: bool = True
    ) -> GenerationPage:
        """``GET /generations?limit=&offset=``: one page (order as the server gives it).
        ``retry=False``: one attempt, as for ``get``."""
        path = f"/generations?limit={int(limit)}&offset={int(offset)}"
        return await self._read("list", "GET", path, structure_page, retry=retry)

    async def iter_generations(self, page_size: int = 100) -> AsyncIterator[Generation]:
        """Every generation, page after page (``offset`` advances while ``has_more``)."""
        offset = 0
        while True:
            page = await self.list(limit=page_size, offset=offset)
            for generation in page.generations:
                yield generation
            if not page.has_more or not page.generations:
                return
            offset += len(page.generations)

    async def delete(self, generation_id: str) -> None:
        """``DELETE /generations/{id}``. The API has no cancel; this removes the record."""
        path = f"/generations/{quote_id(generation_id)}"
        await self._read("delete", "DELETE", path, lambda _: None)

    async def concepts(self) -> builtins.list[str]:
        """``GET /generations/concepts/list``: concept keys for ``VideoRequest.concepts``."""
        return await self._read("read", "GET", "/generations/concepts/list", structure_strings)

    async def camera_motions(self) -> builtins.list[str]:
        """``GET /generations/camera_motion/list``: camera moves to use in prompts (legacy)."""
        path = "/generations/camera_motion/list"
        return await self._read("read", "GET", path, structure_strings)

    async def credits(self) -> Credits:
        """``GET /credits``: the balance in USD cents."""
        return await self._read("read", "GET", "/credits", structure_credits)

    async def ping(self) -> Ping:
        """``GET /ping``."""
        return await self._read("read", "GET", "/ping", structure_ping)

    # -- create ------------------------------------------------------------------------

    async def create(
        self,
        request: CreateRequest,
        *,
        retry_rate_limited: bool = True,
        validate: bool = True,
        retry_connect: bool = True,
    ) -> Generation:
        """Start a generation. Validates first (``ValidationError``; nothing is sent).

        Retried only when the server surely did not act: the connection could not be
        made, or (with ``retry_rate_limited``) it answered 429. With
        ``retry_rate_limited=False`` a 429 raises ``RateLimitError`` at once, and with
        ``retry_connect=False`` a connect error raises ``ConnectError`` at once (the
        scheduler keeps its own backoff, to report an outage quickly). When the
        request may have reached the server and no usable answer came back, raises
        ``AmbiguousCreateError``: reconcile (e.g. with ``list``) before sending again.
        A request naming a local file (``file://``) is refused unsent: the server
        cannot read the disk (``Scheduler(inputs=lumasched.Uploads(...))`` uploads it).
        """
        if validate:
            request.validate()
        local = [slot.field for slot in media_slots(request) if is_local(slot.url)]
        if local:
            message = "a local file: upload it first (Scheduler(inputs=lumasched.Uploads(...)))"
            raise ValidationError([Problem(field, message) for field in local])
        path = request.path
        body = dumps_body(request)
        read_timeout = deadline = None
        if isinstance(request, ImageRequest) and request.sync and request.sync_timeout:
            # A sync image holds the answer up to sync_timeout: a shorter read timeout
            # would turn every slow success into an ambiguous create.
            read_timeout = max(self.timeout.read, float(request.sync_timeout) + _SYNC_READ_MARGIN)
            if self.timeout.total is not None:
                deadline = max(self.timeout.total, read_timeout + self.timeout.connect)

        def ambiguous(message: str, cause: BaseException, sent_at: float) -> _Failed:
            self._counts["ambiguous"] += 1
            error = AmbiguousCreateError(
                message, path=path, body=request_body(request), sent_at=sent_at, cause=cause
            )
            error.__cause__ = cause
            return _Failed(error, retryable=False)

        async def attempt() -> Generation:
            self._creates[request.kind] += 1
            sent_at = time.time()
            try:
                answer = await self._exchange(
                    "POST", path, body=body, read_timeout=read_timeout, deadline=deadline
                )
            except ConnectError as exc:
                raise _Failed(exc, retryable=retry_connect) from exc
            except TransportError as exc:
                raise ambiguous(f"no answer after sending: {exc}", exc, sent_at) from exc
            if 300 <= answer.status < 400:
                # A redirect is a routing answer (a wrong base URL), not a create.
                raise _Failed(_redirected(answer, "POST", path), retryable=False)
            if answer.status >= 400:
                error = error_for_status(
                    answer.status, answer.headers, answer.raw, method="POST", url=path
                )
                self._note_status(error)
                if answer.status >= 500 or answer.status == 408:
                    raise ambiguous(f"server answered {error}", error, sent_at) from error
                retryable = (
                    isinstance(error, RateLimitError)
                    and retry_rate_limited
                    and answer.headers.get("x-should-retry", "").lower() != "false"
                )
                raise _Failed(error, retryable=retryable, retry_after=_retry_after_of(error))
            try:
                return structure_generation(decode_body(answer.raw))
            except ValueError as exc:
                raise ambiguous(
                    f"unreadable answer (HTTP {answer.status}): {exc}", exc, sent_at
                ) from exc

        result: Generation = await self._run(attempt)
        return result

    # -- assets ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_asset(
        self, url: str, *, start: int = 0, read_timeout: float | None = None
    ) -> AsyncIterator[AssetStream]:
        """Stream an asset URL (no API key is sent: asset hosts are third parties).

        ``start > 0`` asks for ``Range: bytes=start-``; check ``stream.status`` (206 =
        partial, 200 = whole file, 416 = nothing left). Not retried: callers resume.
        """
        session = self._open_session()
        self._counts["assets"] += 1
        # No total deadline: a large video may take long; a stalled one trips sock_read.
        timeout = self.timeout.aiohttp(read=read_timeout, whole=False)

        def count(n: int) -> None:
            self._counts["download_bytes"] += n

        async with open_stream(
            session, url, start=start, client_timeout=timeout, on_bytes=count
        ) as s:
            yield s


async def _read_capped(
    response: aiohttp.ClientResponse, limit: int, method: str, path: str
) -> bytes:
    """The whole body, or ``ResponseTooLargeError`` as soon as it passes ``limit`` bytes
    (before reading at all when Content-Length says so)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()  # the rest is never read: the connection cannot be reused
        raise ResponseTooLargeError(limit, method=method, url=path)
    chunks: builtins.list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()
            raise ResponseTooLargeError(limit, method=method, url=path)
        chunks.append(chunk)
    return b"".join(chunks)


def _redirected(answer: _Answer, method: str, path: str) -> TransportError:
    where = answer.headers.get("Location", "")[:200] or "nowhere"
    return TransportError(
        f"the API answered a redirect (HTTP {answer.status} to {where}) to {method} {path}; "
        "check the base URL",
        method=method,
        url=path,
    )


def _should_retry_read(answer: _Answer) -> bool:
    override = answer.headers.get("x-should-retry", "").lower()
    if override in {"true", "false"}:
        return override == "true"
    return answer.status in _RETRY_STATUSES or answer.status >= 500


def _retry_after_of(error: APIStatusError) -> float | None:
    return error.retry_after if isinstance(error, RateLimitError) else None
