"""Authentication and hostile input: the emulator answers 400/401/413, never 500."""

from __future__ import annotations

import asyncio
import gzip
import json

import lumaai
import pytest

from lumasched.emulator import Emulator
from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import API_KEY

API = "/dream-machine/v1"
ROUTES = [
    ("GET", f"{API}/ping"),
    ("GET", f"{API}/credits"),
    ("GET", f"{API}/generations"),
    ("GET", f"{API}/generations/concepts/list"),
    ("GET", f"{API}/generations/00000000-0000-4000-8000-000000000000"),
    ("DELETE", f"{API}/generations/00000000-0000-4000-8000-000000000000"),
    ("POST", f"{API}/generations/video"),
    ("POST", f"{API}/generations/image"),
    ("POST", f"{API}/generations/00000000-0000-4000-8000-000000000000/upscale"),
    ("GET", "/_emulator/stats"),
    ("POST", "/_emulator/faults"),
    ("POST", "/_emulator/reset"),
]


async def _raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, object]]:
    """Send one hand-made HTTP/1.1 request; (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = f"Content-Length: {len(body)}\r\n".encode()
        writer.write(head + b"Host: x\r\nConnection: close\r\n" + length + b"\r\n" + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    header, _, payload = response.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload)


def _post(path: str, *headers: bytes) -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return f"POST {path} HTTP/1.1\r\n".encode() + lines


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_undecodable_authorization_is_401_on_every_route(method: str, path: str) -> None:
    """A non-UTF-8 Authorization header answers 401 (never 500) on API and control routes."""
    async with Emulator(fast_emulator_config(api_key=API_KEY)) as emu:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + b"Authorization: Bearer \xff\xfe\x80\r\n"
        status, body = await _raw(emu.port, head)
        assert status == 401
        assert "Authorization" in str(body["detail"])
        assert emu.inspect.responses_by_status.get(500) is None


async def test_missing_or_malformed_key_is_401_without_a_pinned_key() -> None:
    """Without --api-key any bearer token works, but none or a malformed one is a 401."""
    async with Emulator(fast_emulator_config()) as emu:
        async with lumaai.AsyncLumaAI(
            auth_token="any-key-at-all", base_url=emu.base_url, max_retries=0
        ) as client:
            assert (await client.ping.check()).message == "pong"
            for header in ("", "Bearer", "Basic abc", "Bearer a b"):
                with pytest.raises(lumaai.AuthenticationError) as info:
                    await client.get(
                        "/ping", cast_to=object, options={"headers": {"Authorization": header}}
                    )
                assert "Authorization" in info.value.body["detail"]
        status, body = await _raw(emu.port, f"GET {API}/ping HTTP/1.1\r\n".encode())
        assert (status, body) == (
            401,
            {"detail": "Missing API key: send 'Authorization: Bearer <key>'"},
        )
        assert emu.inspect.unauthorized == 5
        assert (await _raw(emu.port, b"GET /_emulator/stats HTTP/1.1\r\n"))[0] == 200


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        (f"{API}/generations/video", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (f"{API}/generations/video", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested deeper"),
        (
            f"{API}/generations/image",
            b'{"prompt": "a cat", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
            "nested deeper",
        ),
        ("/_emulator/faults", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (f"{API}/generations/video", b'{"prompt": "\xff\xfe"}', "Invalid JSON"),
    ],
)
async def test_hostile_json_bodies_are_400(path: str, body: bytes, problem: str) -> None:
    """Deeply nested or undecodable JSON answers 400 with a reason; nothing is created."""
    async with Emulator(fast_emulator_config(api_key=API_KEY)) as emu:
        head = _post(path, f"Authorization: Bearer {API_KEY}".encode())
        status, answer = await _raw(emu.port, head, body)
        assert status == 400 and problem in str(answer["detail"])
        assert emu.inspect.creates_total == 0


async def test_bad_gzip_is_400_and_a_huge_body_is_413() -> None:
    """A body that does not decode as its Content-Encoding is 400; one past the size limit 413."""
    async with Emulator(fast_emulator_config(api_key=API_KEY)) as emu:
        auth = f"Authorization: Bearer {API_KEY}".encode()
        gz = b"Content-Encoding: gzip"
        path = f"{API}/generations/video"
        status, answer = await _raw(emu.port, _post(path, auth, gz), b"\x1f\x8b not gzip")
        assert status == 400 and "gzip" in str(answer["detail"])
        bomb = gzip.compress(b'{"model": "ray-2", "prompt": "' + b"a" * 3_000_000 + b'"}')
        status, answer = await _raw(emu.port, _post(path, auth, gz), bomb)
        assert status == 413 and "too large" in str(answer["detail"])
        status, _ = await _raw(emu.port, _post(path, auth), b" " * 2_000_000)
        assert status == 413
        assert emu.inspect.creates_total == 0
        assert 500 not in emu.inspect.responses_by_status


@pytest.mark.parametrize(
    "faults",
    [
        {"server_error_status": "abc"},
        {"server_error_status": 200},
        {"expire_urls_issued_before": "yesterday"},
        {"download_bytes_per_second": "fast"},
        {"server_errors": {"ping": "often"}},
        {"server_errors": [1, 2]},
        {"drop_after_create": "0.5"},
    ],
)
async def test_bad_fault_settings_are_400_and_change_nothing(faults: dict[str, object]) -> None:
    """POST /_emulator/faults with a value of the wrong type answers 400; the API keeps working."""
    async with Emulator(fast_emulator_config(api_key=API_KEY)) as emu:
        auth = f"Authorization: Bearer {API_KEY}".encode()
        status, answer = await _raw(
            emu.port, _post("/_emulator/faults", auth), json.dumps(faults).encode()
        )
        assert status == 400 and answer["detail"]
        status, _ = await _raw(emu.port, f"GET {API}/ping HTTP/1.1\r\n".encode() + auth + b"\r\n")
        assert status == 200
