"""The callback receiver on a real socket: secret path, dedupe, ids only."""

from __future__ import annotations

import aiohttp
import pytest

from lumasched.engine.callbacks import CallbackReceiver


async def post(session: aiohttp.ClientSession, url: str, body: object) -> int:
    async with session.post(url, json=body) as response:
        return response.status


async def test_callbacks_become_hints_once_per_state() -> None:
    """Each new (id, state) hints the poller with the id; a retried callback does not."""
    hints: list[str] = []
    async with CallbackReceiver(hints.append) as receiver, aiohttp.ClientSession() as session:
        url = receiver.callback_url
        assert await post(session, url, {"id": "g-1", "state": "dreaming"}) == 200
        assert await post(session, url, {"id": "g-1", "state": "dreaming"}) == 200
        assert await post(session, url, {"id": "g-1", "state": "completed"}) == 200
        assert await post(session, url, {"id": "g-2", "state": "failed", "assets": None}) == 200
        stats = receiver.stats()
    assert hints == ["g-1", "g-1", "g-2"]
    assert (stats.received, stats.duplicates, stats.hints) == (4, 1, 3)


async def test_a_wrong_token_is_not_found() -> None:
    """Without the secret path token the receiver answers 404 and hints nothing."""
    hints: list[str] = []
    async with CallbackReceiver(hints.append) as receiver, aiohttp.ClientSession() as session:
        base = receiver.callback_url.rsplit("/", 1)[0]
        assert await post(session, base + "/guessed", {"id": "g-1", "state": "completed"}) == 404
        assert await post(session, base, {"id": "g-1"}) == 404
        async with session.get(receiver.callback_url) as response:
            assert response.status == 405
        assert receiver.stats().rejected == 1
    assert hints == []


async def test_bodies_without_a_usable_id_are_rejected() -> None:
    """Non-JSON, non-objects and odd ids get 400 and no hint."""
    hints: list[str] = []
    async with CallbackReceiver(hints.append) as receiver, aiohttp.ClientSession() as session:
        url = receiver.callback_url
        async with session.post(url, data=b"not json") as response:
            assert response.status == 400
        for body in [["g-1"], {"state": "completed"}, {"id": 7}, {"id": "../../etc"}, {"id": ""}]:
            assert await post(session, url, body) == 400
    assert hints == []


async def test_callback_url_uses_the_public_url_and_a_secret() -> None:
    """callback_url is public_url plus a random path; each receiver has its own secret."""
    async with (
        CallbackReceiver(lambda _: None, public_url="https://hooks.example/luma/") as a,
        CallbackReceiver(lambda _: None) as b,
    ):
        assert a.callback_url.startswith("https://hooks.example/luma/lumasched/callback/")
        assert b.callback_url.startswith("http://127.0.0.1:")
        assert a.callback_url.rsplit("/", 1)[1] != b.callback_url.rsplit("/", 1)[1]
        assert a.callback_url.rsplit("/", 1)[1] not in repr(a)


def test_callback_url_needs_a_port() -> None:
    """Before the server is started on port 0 there is no URL to give out."""
    with pytest.raises(RuntimeError):
        _ = CallbackReceiver(lambda _: None).callback_url
