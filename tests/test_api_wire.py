"""Request bodies are byte-for-byte what the official SDK sends (wire-reference section 5)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from lumaai import AsyncLumaAI

from lumasched.api import (
    AudioRequest,
    CharacterRef,
    Concept,
    CreateRequest,
    GenerationKeyframe,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframes,
    Media,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    UpscaleRequest,
    VideoRequest,
    dumps_body,
    request_from_dict,
    request_to_dict,
)

GEN_ID = "11111111-2222-3333-4444-555555555555"
EX = "https://example.invalid"

# (request, path, the captured body) for every capture in wire-reference.md section 5.
CAPTURES: list[tuple[str, CreateRequest, str, str]] = [
    (
        "image text-to-image",
        ImageRequest("a cat", aspect_ratio="16:9"),
        "/generations/image",
        '{"model":"photon-1","aspect_ratio":"16:9","prompt":"a cat"}',
    ),
    (
        "image refs",
        ImageRequest(
            "a cat in style",
            model="photon-flash-1",
            aspect_ratio="1:1",
            callback_url=f"{EX}/cb",
            character_ref=CharacterRef.of(f"{EX}/face1.jpg", f"{EX}/face2.jpg"),
            format="png",
            image_ref=[ImageRef(f"{EX}/ref.jpg", 0.85)],
            style_ref=[ImageRef(f"{EX}/style.jpg", 0.8)],
        ),
        "/generations/image",
        '{"model":"photon-flash-1","aspect_ratio":"1:1","callback_url":"https://example.invalid/cb",'
        '"character_ref":{"identity0":{"images":["https://example.invalid/face1.jpg",'
        '"https://example.invalid/face2.jpg"]}},"format":"png","image_ref":[{"url":'
        '"https://example.invalid/ref.jpg","weight":0.85}],"prompt":"a cat in style",'
        '"style_ref":[{"url":"https://example.invalid/style.jpg","weight":0.8}]}',
    ),
    (
        "image modify_image_ref",
        ImageRequest("make it night", modify_image_ref=ImageRef(f"{EX}/in.jpg", 1.0)),
        "/generations/image",
        '{"model":"photon-1","modify_image_ref":{"url":"https://example.invalid/in.jpg",'
        '"weight":1.0},"prompt":"make it night"}',
    ),
    (
        "image sync",
        ImageRequest("fast", generation_type="image", sync=True, sync_timeout=30),
        "/generations/image",
        '{"model":"photon-1","generation_type":"image","prompt":"fast","sync":true,"sync_timeout":30}',
    ),
    (
        "video text-to-video",
        VideoRequest(
            "a teddy bear", aspect_ratio="16:9", duration="5s", loop=False, resolution="720p"
        ),
        "/generations/video",
        '{"model":"ray-2","aspect_ratio":"16:9","duration":"5s","loop":false,'
        '"prompt":"a teddy bear","resolution":"720p"}',
    ),
    (
        "generations.create alias",
        VideoRequest("a teddy bear", model="ray-flash-2", duration="9s", resolution="1080p"),
        "/generations/video",
        '{"model":"ray-flash-2","duration":"9s","prompt":"a teddy bear","resolution":"1080p"}',
    ),
    (
        "video image keyframes",
        VideoRequest(
            "zoom in",
            keyframes=Keyframes(ImageKeyframe(f"{EX}/start.jpg"), ImageKeyframe(f"{EX}/end.jpg")),
        ),
        "/generations/video",
        '{"model":"ray-2","keyframes":{"frame0":{"type":"image","url":'
        '"https://example.invalid/start.jpg"},"frame1":{"type":"image","url":'
        '"https://example.invalid/end.jpg"}},"prompt":"zoom in"}',
    ),
    (
        "video extend",
        VideoRequest("continue", keyframes=Keyframes(frame0=GenerationKeyframe(GEN_ID))),
        "/generations/video",
        '{"model":"ray-2","keyframes":{"frame0":{"type":"generation","id":'
        '"11111111-2222-3333-4444-555555555555"}},"prompt":"continue"}',
    ),
    (
        "video reverse extend",
        VideoRequest("before", keyframes=Keyframes(frame1=GenerationKeyframe(GEN_ID))),
        "/generations/video",
        '{"model":"ray-2","keyframes":{"frame1":{"type":"generation","id":'
        '"11111111-2222-3333-4444-555555555555"}},"prompt":"before"}',
    ),
    (
        "video concepts loop callback",
        VideoRequest(
            "orbit",
            callback_url=f"{EX}/luma-callback",
            concepts=[Concept("dolly_zoom")],
            generation_type="video",
            loop=True,
        ),
        "/generations/video",
        '{"model":"ray-2","callback_url":"https://example.invalid/luma-callback",'
        '"concepts":[{"key":"dolly_zoom"}],"generation_type":"video","loop":true,"prompt":"orbit"}',
    ),
    (
        "image reframe",
        ReframeImageRequest(
            Media(f"{EX}/img.jpg"),
            aspect_ratio="9:16",
            model="photon-flash-1",
            format="jpg",
            grid_position_x=10,
            grid_position_y=20,
            prompt="extend sky",
            resized_height=512,
            resized_width=512,
            x_end=1080,
            x_start=0,
            y_end=1920,
            y_start=0,
        ),
        "/generations/image/reframe",
        '{"aspect_ratio":"9:16","generation_type":"reframe_image","media":{"url":'
        '"https://example.invalid/img.jpg"},"model":"photon-flash-1","format":"jpg",'
        '"grid_position_x":10,"grid_position_y":20,"prompt":"extend sky","resized_height":512,'
        '"resized_width":512,"x_end":1080,"x_start":0,"y_end":1920,"y_start":0}',
    ),
    (
        "video reframe",
        ReframeVideoRequest(
            f"{EX}/clip.mp4",
            aspect_ratio="1:1",
            model="ray-flash-2",
            first_frame=f"{EX}/first.jpg",
            prompt="wider",
        ),
        "/generations/video/reframe",
        '{"aspect_ratio":"1:1","generation_type":"reframe_video","media":{"url":'
        '"https://example.invalid/clip.mp4"},"model":"ray-flash-2","first_frame":{"url":'
        '"https://example.invalid/first.jpg"},"prompt":"wider"}',
    ),
    (
        "video modify",
        ModifyVideoRequest(
            Media(f"{EX}/clip.mp4"),
            mode="flex_1",
            first_frame=Media(f"{EX}/first.jpg"),
            prompt="make it anime",
        ),
        "/generations/video/modify",
        '{"generation_type":"modify_video","media":{"url":"https://example.invalid/clip.mp4"},'
        '"mode":"flex_1","model":"ray-2","first_frame":{"url":"https://example.invalid/first.jpg"},'
        '"prompt":"make it anime"}',
    ),
    (
        "upscale",
        UpscaleRequest(GEN_ID, resolution="4k", callback_url=f"{EX}/cb"),
        f"/generations/{GEN_ID}/upscale",
        '{"callback_url":"https://example.invalid/cb","generation_type":"upscale_video",'
        '"resolution":"4k"}',
    ),
    (
        "audio",
        AudioRequest(GEN_ID, prompt="rain", negative_prompt="music"),
        f"/generations/{GEN_ID}/audio",
        '{"generation_type":"add_audio","negative_prompt":"music","prompt":"rain"}',
    ),
]


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
