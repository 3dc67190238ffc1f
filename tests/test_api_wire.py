"""Request bodies are byte-for-byte what the official SDK sends (wire-reference section 5)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from lumaai import AsyncLumaAI

from lumasched.api import (
    AudioRequest,
    CreateRequest,
    GenerationKeyframe,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframes,
    ReframeVideoRequest,
    UpscaleRequest,
    VideoRequest,
    dumps_body,
    request_from_dict,
    request_to_dict,
)
from tests._api_fixtures import CAPTURES, GEN_ID


@pytest.mark.parametrize(
    ("request_", "path", "body"), [c[1:] for c in CAPTURES], ids=[c[0] for c in CAPTURES]
)
def test_body_matches_capture(request_: CreateRequest, path: str, body: str) -> None:
    """dumps_body gives the captured SDK bytes and the captured path."""
    assert dumps_body(request_) == body.encode()
    assert request_.path == path
    request_.validate()


@pytest.mark.parametrize("request_", [c[1] for c in CAPTURES], ids=[c[0] for c in CAPTURES])
def test_dict_round_trip(request_: CreateRequest) -> None:
    """request_from_dict(request_to_dict(r)) rebuilds an equal request."""
    assert request_from_dict(request_.kind, request_to_dict(request_)) == request_


@pytest.mark.parametrize("request_", [c[1] for c in CAPTURES], ids=[c[0] for c in CAPTURES])
def test_body_parses_back(request_: CreateRequest) -> None:
    """A body (plus the id taken from the path) parses back to the same request."""
    data: dict[str, Any] = json.loads(dumps_body(request_))
    if isinstance(request_, UpscaleRequest | AudioRequest):
        data["generation_id"] = request_.generation_id
    assert request_from_dict(request_.kind, data) == request_


def test_unset_fields_are_absent_never_null() -> None:
    """A request with only defaults sends only the model and prompt."""
    assert dumps_body(VideoRequest("abc")) == b'{"model":"ray-2","prompt":"abc"}'
    assert b"null" not in dumps_body(ImageRequest("abc", image_ref=[ImageRef("u")]))


def test_non_ascii_is_sent_unescaped() -> None:
    """Non-ASCII prompts go out as UTF-8, like the SDK (httpx) sends them."""
    assert dumps_body(VideoRequest("café ☕")) == '{"model":"ray-2","prompt":"café ☕"}'.encode()


async def _sdk_bytes(call: str, kwargs: dict[str, Any]) -> tuple[str, bytes]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": GEN_ID, "state": "queued"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sdk = AsyncLumaAI(auth_token="k", base_url="http://sdk.test/v1", http_client=http)
        target: Any = sdk
        for part in call.split("."):
            target = getattr(target, part)
        await target(**kwargs)
    return seen[0].url.raw_path.decode().removeprefix("/v1"), seen[0].content


SDK_CALLS: list[tuple[CreateRequest, str, dict[str, Any]]] = [
    (
        VideoRequest(
            "sdk",
            model="ray-flash-2",
            aspect_ratio="21:9",
            keyframes=Keyframes(ImageKeyframe("u0"), GenerationKeyframe(GEN_ID)),
            concepts=["orbit_left"],
            callback_url="https://cb",
            duration="9s",
        ),
        "generations.video.create",
        {
            "model": "ray-flash-2",
            "prompt": "sdk",
            "aspect_ratio": "21:9",
            "keyframes": {
                "frame0": {"type": "image", "url": "u0"},
                "frame1": {"type": "generation", "id": GEN_ID},
            },
            "concepts": [{"key": "orbit_left"}],
            "callback_url": "https://cb",
            "duration": "9s",
        },
    ),
    (
        ImageRequest("ünïcode", format="jpg", style_ref=[ImageRef("s", 1)], sync=False),
        "generations.image.create",
        {
            "model": "photon-1",
            "prompt": "ünïcode",
            "format": "jpg",
            "style_ref": [{"url": "s", "weight": 1}],
            "sync": False,
        },
    ),
    (
        ReframeVideoRequest("m", aspect_ratio="4:3", y_end=5, callback_url="https://cb"),
        "generations.video.reframe",
        {
            "model": "ray-2",
            "generation_type": "reframe_video",
            "media": {"url": "m"},
            "aspect_ratio": "4:3",
            "y_end": 5,
            "callback_url": "https://cb",
        },
    ),
    (
        UpscaleRequest("a/b c", resolution="1080p"),
        "generations.upscale",
        {"id": "a/b c", "resolution": "1080p", "generation_type": "upscale_video"},
    ),
]


@pytest.mark.parametrize(("request_", "call", "kwargs"), SDK_CALLS, ids=[c[1] for c in SDK_CALLS])
async def test_same_bytes_and_path_as_the_installed_sdk(
    request_: CreateRequest, call: str, kwargs: dict[str, Any]
) -> None:
    """For the same arguments, the installed lumaai SDK sends exactly our path and bytes."""
    path, body = await _sdk_bytes(call, kwargs)
    assert (request_.path, dumps_body(request_)) == (path, body)
