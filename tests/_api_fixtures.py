"""Fixtures for the api tests: a mocked network (aioresponses) and a client on it.

``mocked`` also patches aioresponses 0.7.x to build responses the way aiohttp
>= 3.13 needs (``ClientResponse`` gained a required ``stream_writer``); other
test modules that use aioresponses can import it too.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

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
    LumaClient,
    Media,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    RetryPolicy,
    UpscaleRequest,
    VideoRequest,
)

API_KEY = "lm-SECRET-KEY-0123456789"
BASE = "https://api.test/dream-machine/v1"


class _NoStreamWriter:
    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(method, url, **kwargs)


_NEEDS_SHIM = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, working on the installed aiohttp."""
    if _NEEDS_SHIM:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client(mocked: aioresponses) -> AsyncIterator[LumaClient]:
    """A client on the mocked network, with retries that do not sleep."""
    async with LumaClient(API_KEY, BASE, retry=RetryPolicy.for_tests()) as c:
        yield c


def sent(m: aioresponses, method: str = "POST") -> list[Any]:
    """Every recorded call with ``method``, in order, across URLs."""
    return [call for (verb, _), calls in m.requests.items() if verb == method for call in calls]


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
