"""The official ``lumaai`` SDK, unchanged, against the emulator: every endpoint and request kind."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime

import lumaai
import pytest

from lumasched.emulator import CAMERA_MOTIONS, CONCEPTS
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    check_assets,
    decode_video,
    http,
    luma_emulator,
    luma_emulator_config,
    open_image,
    sdk,
    wait_terminal,
)


async def test_text_to_video_lifecycle_and_shape(sdk, luma_emulator, http):
    """A video create answers 201 queued with the request echoed, then completes with a real MP4."""
    body = {
        "model": "ray-2",
        "aspect_ratio": "16:9",
        "duration": "5s",
        "loop": False,
        "prompt": "a teddy bear",
        "resolution": "720p",
    }
    raw = await sdk.generations.video.with_raw_response.create(**body)
    assert raw.status_code == 201
    created = await raw.parse()
    # speed 1000: queued lasts milliseconds, which a busy machine can overrun
    assert created.state in ("queued", "dreaming")
    assert created.model == "ray-2"
    assert created.generation_type == "video"
    assert created.assets is None and created.failure_reason is None
    echo = created.request.to_dict()
    assert body.items() <= echo.items()
    assert echo["generation_type"] == "video" and echo["callback_url"] is None
    assert echo["keyframes"] is None and echo["concepts"] is None
    assert isinstance(created.created_at, datetime) and created.created_at.tzinfo is not None
    done = await wait_terminal(sdk, created.id)
    files = await check_assets(http, done)
    assert decode_video(files["video"]) == (120, 160, 90)


async def test_created_at_is_iso8601_with_z(sdk, luma_emulator, http):
    """created_at goes on the wire as ISO-8601 with milliseconds and a Z."""
    generation = await sdk.generations.create(model="ray-flash-2", prompt="a teddy bear")
    data = luma_emulator.generation_json(generation.id)
    assert data["created_at"].endswith("Z") and "T" in data["created_at"]
    datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))


async def test_text_to_image_jpeg_and_png(sdk, luma_emulator, http):
    """Images are real JPEG (default) or PNG files sized from the reframe table / 8."""
    jpg = await sdk.generations.image.create(model="photon-1", prompt="a cat", aspect_ratio="16:9")
    png = await sdk.generations.image.create(
        model="photon-flash-1", prompt="a cat", aspect_ratio="9:21", format="png"
    )
    assert jpg.generation_type == "image"
    jpg_done, png_done = await wait_terminal(sdk, jpg.id), await wait_terminal(sdk, png.id)
    assert jpg_done.assets.video is None
    one = open_image((await check_assets(http, jpg_done))["image"])
    two = open_image((await check_assets(http, png_done))["image"])
    assert (one.format, one.size) == ("JPEG", (256, 144))
    assert (two.format, two.size) == ("PNG", (128, 304))


async def test_every_image_reference_kind(sdk, luma_emulator, http):
    """image_ref, style_ref, character_ref and modify_image_ref creates all complete."""
    url = "https://example.invalid/ref.jpg"
    calls = [
        {"image_ref": [{"url": url, "weight": 0.85}]},
        {"style_ref": [{"url": url, "weight": 0.8}]},
        {"character_ref": {"identity0": {"images": [url, url]}}},
        {"modify_image_ref": {"url": url, "weight": 1.0}},
    ]
    ids = []
    for extra in calls:
        generation = await sdk.generations.image.create(model="photon-1", prompt="a cat", **extra)
        echo = generation.request.to_dict()
        assert {"model": "photon-1", "prompt": "a cat", **extra}.items() <= echo.items()
        assert (echo["aspect_ratio"], echo["format"], echo["sync"]) == ("16:9", "jpg", False)
        assert all(echo[key] is None for key in ("image_ref", "style_ref") if key not in extra)
        ids.append(generation.id)
    for gen_id in ids:
        await check_assets(http, await wait_terminal(sdk, gen_id))


async def test_image_sync_mode_returns_completed(sdk, luma_emulator):
    """sync=true holds the create until the image is done."""
    generation = await sdk.generations.image.create(
        model="photon-1", prompt="fast", generation_type="image", sync=True, sync_timeout=30
    )
    assert generation.state == "completed"
    assert generation.assets.image


async def test_keyframe_video_kinds(sdk, luma_emulator, http):
    """Image-to-video (start, end, both), extend, reverse extend, interpolate and mixed frames."""
    source = await wait_terminal(
        sdk, (await sdk.generations.create(model="ray-2", prompt="a tiger", aspect_ratio="9:16")).id
    )
    image = {"type": "image", "url": "https://example.invalid/start.jpg"}
    gen = {"type": "generation", "id": source.id}
    variants = [
        {"frame0": image},
        {"frame1": image},
        {"frame0": image, "frame1": image},
        {"frame0": gen},
        {"frame1": gen},
        {"frame0": gen, "frame1": gen},
        {"frame0": gen, "frame1": image},
        {"frame0": image, "frame1": gen},
    ]
    created = [
        await sdk.generations.video.create(model="ray-2", prompt="zoom in", keyframes=frames)
        for frames in variants
    ]
    for generation in created:
        done = await wait_terminal(sdk, generation.id)
        await check_assets(http, done)
    extended = await sdk.generations.get(created[3].id)
    assert decode_video((await check_assets(http, extended))["video"])[1:] == (90, 160)


async def test_image_keyframe_without_prompt(sdk, luma_emulator):
    """With an image keyframe the prompt may be left out."""
    generation = await sdk.generations.video.create(
        model="ray-2", keyframes={"frame0": {"type": "image", "url": "https://x.invalid/a.jpg"}}
    )
    assert generation.state in ("queued", "dreaming")  # speed 1000: queued lasts milliseconds


async def test_loop_concepts_callback_fields(sdk, luma_emulator):
    """loop, concepts, callback_url and generation_type are accepted and echoed."""
    generation = await sdk.generations.video.create(
        model="ray-2",
        prompt="orbit",
        loop=True,
        concepts=[{"key": "dolly_zoom"}],
        callback_url="http://127.0.0.1:9/cb",
        generation_type="video",
    )
    assert generation.request.to_dict()["concepts"] == [{"key": "dolly_zoom"}]


async def test_reframe_and_modify(sdk, luma_emulator, http):
    """Image reframe, video reframe and video modify create and complete with real files."""
    image = await sdk.generations.image.reframe(
        aspect_ratio="9:16",
        generation_type="reframe_image",
        media={"url": "https://example.invalid/img.jpg"},
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
    )
    video = await sdk.generations.video.reframe(
        aspect_ratio="1:1",
        generation_type="reframe_video",
        media={"url": "https://example.invalid/clip.mp4"},
        model="ray-flash-2",
        first_frame={"url": "https://example.invalid/first.jpg"},
        prompt="wider",
    )
    modify = await sdk.generations.video.modify(
        generation_type="modify_video",
        media={"url": "https://example.invalid/clip.mp4"},
        mode="flex_1",
        model="ray-2",
        first_frame={"url": "https://example.invalid/first.jpg"},
        prompt="make it anime",
    )
    assert (image.generation_type, video.generation_type, modify.generation_type) == (
        "image",
        "video",
        "video",
    )
    assert [g.request.generation_type for g in (image, video, modify)] == [
        "reframe_image",
        "reframe_video",
        "modify_video",
    ]
    image_files = await check_assets(http, await wait_terminal(sdk, image.id))
    assert open_image(image_files["image"]).size == (144, 256)
    video_files = await check_assets(http, await wait_terminal(sdk, video.id))
    assert decode_video(video_files["video"])[1:] == (90, 90)
    await check_assets(http, await wait_terminal(sdk, modify.id))


async def test_upscale_and_audio_answer_200_with_a_new_generation(sdk, luma_emulator, http):
    """Upscale and audio answer 200 and (by default) start a new generation on the source."""
    source = await wait_terminal(
        sdk, (await sdk.generations.create(model="ray-2", prompt="a tiger")).id
    )
    raw = await sdk.generations.with_raw_response.upscale(
        source.id, resolution="4k", generation_type="upscale_video"
    )
    assert raw.status_code == 200
    upscaled = await raw.parse()
    audio_raw = await sdk.generations.with_raw_response.audio(
        source.id, prompt="rain", negative_prompt="music", generation_type="add_audio"
    )
    assert audio_raw.status_code == 200
    audio = await audio_raw.parse()
    assert upscaled.id != source.id and audio.id != source.id
    assert (upscaled.generation_type, audio.generation_type) == ("video", "video")
    assert upscaled.request.to_dict() == {
        "type": "upscale_video",
        "callback_url": None,
        "generation_type": "upscale_video",
        "resolution": "4k",
    }
    assert audio.request.generation_type == "add_audio" and audio.request.prompt == "rain"
    assert upscaled.model == "ray-2"
    for generation in (upscaled, audio):
        await check_assets(http, await wait_terminal(sdk, generation.id))


async def test_assets_differ_per_generation(sdk, luma_emulator, http):
    """Two generations with the same request get different files (different sha256)."""
    one = await sdk.generations.create(model="ray-2", prompt="same")
    two = await sdk.generations.create(model="ray-2", prompt="same")
    digests = set()
    for gen_id in (one.id, two.id):
        files = await check_assets(http, await wait_terminal(sdk, gen_id))
        digests.add(hashlib.sha256(files["video"]).hexdigest())
        digests.add(hashlib.sha256(files["image"]).hexdigest())
    assert len(digests) == 4


async def test_list_newest_first_with_paging(sdk, luma_emulator):
    """list is newest first, honours limit/offset, and reports count and has_more."""
    ids = [
        (await sdk.generations.image.create(model="photon-1", prompt=f"cat {i}")).id
        for i in range(5)
    ]
    page = await sdk.generations.list(limit=2, offset=1)
    assert [g.id for g in page.generations] == [ids[3], ids[2]]
    assert (page.count, page.has_more, page.limit, page.offset) == (2, True, 2, 1)
    last = await sdk.generations.list(limit=2, offset=4)
    assert ([g.id for g in last.generations], last.has_more) == ([ids[0]], False)
    everything = await sdk.generations.list()
    assert (everything.count, everything.limit, everything.offset) == (5, 100, 0)


async def test_delete_then_404(sdk, luma_emulator):
    """delete answers 204, then the generation is gone from get, list and delete."""
    generation = await sdk.generations.image.create(model="photon-1", prompt="a cat")
    raw = await sdk.generations.with_raw_response.delete(generation.id)
    assert raw.status_code == 204
    with pytest.raises(lumaai.NotFoundError):
        await sdk.generations.get(generation.id)
    with pytest.raises(lumaai.NotFoundError):
        await sdk.generations.delete(generation.id)
    assert (await sdk.generations.list()).count == 0


async def test_catalogue_credits_ping(sdk, luma_emulator):
    """concepts, camera motions, credits and ping answer the documented shapes."""
    assert await sdk.generations.concepts.list() == list(CONCEPTS)
    motions = await sdk.get("/generations/camera_motion/list", cast_to=object)
    assert motions == list(CAMERA_MOTIONS)
    assert (await sdk.credits.get()).credit_balance == 500_000.0
    assert (await sdk.ping.check()).message == "pong"


async def test_legacy_generations_path(sdk, luma_emulator, http):
    """The docs' legacy POST /generations (no model) makes a ray-2 video."""
    data = await sdk.post("/generations", body={"prompt": "an old lady laughing"}, cast_to=object)
    assert data["model"] == "ray-2" and data["generation_type"] == "video"
    await check_assets(http, await wait_terminal(sdk, data["id"]))


async def test_sdk_aiohttp_backend(luma_emulator, http):
    """The SDK's own aiohttp backend (lumaai[aiohttp]) authenticates and runs a job to its file."""
    from tests._emulator_fixtures import API_KEY

    async with lumaai.AsyncLumaAI(
        auth_token=API_KEY,
        base_url=luma_emulator.base_url,
        max_retries=0,
        http_client=lumaai.DefaultAioHttpClient(),
    ) as client:
        created = await client.generations.image.create(model="photon-1", prompt="a cat")
        assert created.state in ("queued", "dreaming")  # speed 1000: queued lasts milliseconds
        done = await wait_terminal(client, created.id)
        await check_assets(http, done)
        assert [g.id for g in (await client.generations.list()).generations] == [created.id]
        assert (await client.ping.check()).message == "pong"
        await client.generations.delete(created.id)
    assert luma_emulator.inspect.unauthorized == 0
    assert luma_emulator.inspect.deletes == 1


async def test_sync_sdk_strict_reads_every_kind(sdk, luma_emulator):
    """The sync SDK in strict mode reads every kind's generation (get and list), queued,
    completed and failed, and every other read endpoint."""
    from tests._emulator_fixtures import API_KEY

    source = await wait_terminal(
        sdk, (await sdk.generations.create(model="ray-2", prompt="a fox")).id
    )
    media = {"url": "https://example.invalid/clip.mp4"}
    await sdk.generations.image.create(model="photon-1", prompt="a cat", sync=True)
    await sdk.generations.create(model="ray-flash-2", prompt="something nsfw here")
    await sdk.generations.image.reframe(
        aspect_ratio="1:1", generation_type="reframe_image", media=media, model="photon-1"
    )
    await sdk.generations.video.reframe(
        aspect_ratio="1:1", generation_type="reframe_video", media=media, model="ray-2"
    )
    await sdk.generations.video.modify(
        generation_type="modify_video", media=media, mode="adhere_1", model="ray-flash-2"
    )
    await sdk.generations.upscale(source.id, resolution="1080p")
    await sdk.generations.audio(source.id, prompt="rain")

    def read_all() -> list[str]:
        with lumaai.LumaAI(
            auth_token=API_KEY,
            base_url=luma_emulator.base_url,
            max_retries=0,
            _strict_response_validation=True,
        ) as client:
            generations = client.generations.list().generations
            for generation in generations:
                client.generations.get(generation.id)
            client.generations.concepts.list()
            client.credits.get()
            client.ping.check()
            return sorted(str(g.request.generation_type) for g in generations)

    kinds = await asyncio.to_thread(read_all)
    assert kinds == sorted(
        ["video"] * 2
        + ["image", "reframe_image", "reframe_video", "modify_video", "upscale_video", "add_audio"]
    )
