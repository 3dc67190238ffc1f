"""The one boundary where aiohttp's exceptions and answers become lumasched errors."""

from __future__ import annotations

import builtins
import contextlib
import json
import platform
import time
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from lumasched.errors import (
    APIStatusError,
    APITimeoutError,
    ConnectError,
    RateLimitError,
    TooManyRedirects,
    TransportError,
    status_error_for,
)

__all__ = [
    "error_for_status",
    "parse_retry_after",
    "translate_errors",
    "user_agent",
]

_DETAIL_LIMIT = 500


def user_agent() -> str:
    """``lumasched/<v> aiohttp/<v> python/<v>``."""
    try:
        version = metadata.version("lumasched")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "0"
    return f"lumasched/{version} aiohttp/{aiohttp.__version__} python/{platform.python_version()}"


@contextlib.contextmanager
def translate_errors(method: str, url: str) -> Iterator[None]:
    """Turn aiohttp/socket failures into ``TransportError`` subclasses (``raise ... from``).

    ``ConnectError`` means the request surely never left (refused, DNS, TLS, connect
    timeout); any other ``TransportError`` means it may have reached the server.
    """
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise ConnectError(
            f"timed out connecting ({method} {url})", method=method, url=url
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(
            f"could not connect: {exc.os_error or exc} ({method} {url})", method=method, url=url
        ) from exc
    except aiohttp.TooManyRedirects as exc:
        hops = len(exc.history)
        raise TooManyRedirects(
            f"redirect loop: still redirected after {hops} hops ({method} {url})",
            method=method,
            url=url,
        ) from exc
    except builtins.TimeoutError as exc:  # includes aiohttp.ServerTimeoutError (a read timeout)
        raise APITimeoutError(f"timed out ({method} {url})", method=method, url=url) from exc
    except (aiohttp.ClientError, OSError) as exc:
        if isinstance(exc, aiohttp.ClientResponseError):
            _drop_credentials(exc)
        reason = str(exc) or type(exc).__name__
        raise TransportError(f"{reason} ({method} {url})", method=method, url=url) from exc


def _drop_credentials(exc: aiohttp.ClientResponseError) -> None:
    # aiohttp keeps the request's headers on the error, and its repr shows them:
    # without this the API key would ride along in every exception chain.
    info = exc.request_info
    headers = CIMultiDict(info.headers)
    headers.popall("Authorization", None)
    exc.request_info = aiohttp.RequestInfo(
        info.url, info.method, CIMultiDictProxy(headers), info.real_url
    )


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait: ``Retry-After-ms``, else ``Retry-After`` (seconds
    or an HTTP date). ``None`` when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def decode_body(raw: bytes) -> Any:
    """Parsed JSON, or the text when the body is not JSON (an HTML error page, say)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _detail(body: Any) -> str | None:
    """The server's message, cut to a length a log line and the journal can carry."""
    if isinstance(body, Mapping) and "detail" in body:
        detail = body["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"))
        return _clip(text)
    if isinstance(body, str) and body.strip():
        return _clip(body.strip())
    return None


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "…"


def error_for_status(
    status: int, headers: Mapping[str, str], raw: bytes, *, method: str, url: str
) -> APIStatusError:
    """The status error for an HTTP error answer, with the server's ``detail``."""
    body = decode_body(raw)
    detail = _detail(body)
    cls = status_error_for(status)
    if cls is RateLimitError:
        return RateLimitError(
            status,
            detail,
            retry_after=parse_retry_after(headers),
            body=body,
            method=method,
            url=url,
        )
    return cls(status, detail, body=body, method=method, url=url)
