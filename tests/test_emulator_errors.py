"""The documented error answers: 400 messages, 401, 404, as the official SDK sees them."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

import lumaai
import pytest

from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    API_KEY,
    http,
    luma_emulator,
    luma_emulator_config,
    sdk,
    wait_terminal,
)

IMAGE = {"type": "image", "url": "https://example.invalid/a.jpg"}


async def _bad_request(call) -> str:
    with pytest.raises(lumaai.BadRequestError) as info:
        await call
    assert info.value.status_code == 400
    return info.value.body["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"model": "ray-2"}, "Prompt is required"),
        ({"model": "ray-2", "prompt": None}, "Prompt is required"),
        ({"model": "ray-2", "prompt": "ab"}, "Prompt is too short, minimum length is 3 characters"),
        (
            {"model": "ray-2", "prompt": "x" * 5001},
            "Prompt is too long, maximum length is 5000 characters",
        ),
        (
            {
                "model": "ray-2",
                "prompt": "p p",
                "loop": True,
                "keyframes": {"frame0": IMAGE, "frame1": IMAGE},
            },
            "Loop is not supported for keyframes",
        ),
        (
            {"model": "ray-2", "prompt": "p p", "loop": True, "keyframes": {"frame1": IMAGE}},
            "Loop is not supported for extend reverse",
        ),
        (
            {"model": "ray-2", "prompt": "p p", "keyframes": {"frame0": None, "frame1": None}},
            "No keyframes provided",
        ),
        ({"model": "ray-2", "prompt": "p p", "generation_type": "image"}, "Unknown request type"),
        (
            {"model": "ray-2", "prompt": "p p", "keyframes": {"frame0": {"type": "audio"}}},
            "Unknown request type",
        ),
    ],
)
async def test_documented_video_400s(sdk, luma_emulator, body, detail):
    """Each documented create error answers 400 with its exact message and creates nothing."""
    detail_seen = await _bad_request(sdk.post("/generations/video", body=body, cast_to=object))
    assert detail_seen == detail
    assert luma_emulator.inspect.creates_total == 0


async def test_loop_on_interpolations(sdk, luma_emulator):
    """loop with generation keyframes gives the three interpolation messages."""
    source = await sdk.generations.create(model="ray-2", prompt="a tiger")
    await wait_terminal(sdk, source.id)
    gen = {"type": "generation", "id": source.id}
    cases = {
        "Loop is not supported for interpolate between two videos": {"frame0": gen, "frame1": gen},
        "Loop is not supported for interpolate video to image": {"frame0": gen, "frame1": IMAGE},
        "Loop is not supported for interpolate image to video": {"frame0": IMAGE, "frame1": gen},
        "Loop is not supported for extend reverse": {"frame1": gen},
    }
    for detail, frames in cases.items():
        call = sdk.generations.create(model="ray-2", prompt="p p", loop=True, keyframes=frames)
        assert await _bad_request(call) == detail


# Speed 1 (a ray-2 video takes tens of seconds): the generation is still running at
# every check, however slow the machine; the test never waits for it.
@pytest.mark.parametrize("luma_emulator_config", [fast_emulator_config(api_key=API_KEY, speed=1.0)])
async def test_keyframe_generation_must_be_completed(sdk, luma_emulator):
    """Extending, upscaling or adding audio to a running or unknown generation answers 400."""
    running = await sdk.generations.create(model="ray-2", prompt="a tiger")
    frames = {"frame0": {"type": "generation", "id": running.id}}
    detail = await _bad_request(
        sdk.generations.create(model="ray-2", prompt="more", keyframes=frames)
    )
    assert detail == f"keyframes.frame0: generation {running.id} is not completed"
    detail = await _bad_request(sdk.generations.upscale(running.id, resolution="4k"))
    assert detail == f"Upscale: generation {running.id} is not completed"
    detail = await _bad_request(sdk.generations.audio(running.id, prompt="rain"))
    assert detail == f"Audio: generation {running.id} is not completed"
    unknown = {"frame1": {"type": "generation", "id": "nope"}}
    detail = await _bad_request(
        sdk.generations.create(model="ray-2", prompt="more", keyframes=unknown)
    )
    assert detail == "keyframes.frame1: generation nope not found"


async def test_image_prompt_rules(sdk, luma_emulator):
    """Image creates need a prompt of 3..5000 characters."""
    assert await _bad_request(sdk.generations.image.create(model="photon-1")) == (
        "Prompt is required"
    )
    assert await _bad_request(sdk.generations.image.create(model="photon-1", prompt="hi")) == (
        "Prompt is too short, minimum length is 3 characters"
    )


async def test_unknown_enums_rejected(sdk, luma_emulator):
    """Unknown model, aspect ratio, resolution or duration answer 400 naming the field."""
    calls = [
        sdk.generations.create(model="ray-9", prompt="a cat"),
        sdk.generations.create(model="ray-2", prompt="a cat", aspect_ratio="2:1"),
        sdk.generations.create(model="ray-2", prompt="a cat", resolution="8k"),
        sdk.generations.create(model="ray-2", prompt="a cat", duration="10 seconds"),
        sdk.generations.image.create(model="photon-9", prompt="a cat"),
    ]
    for field, call in zip(
        ["model", "aspect_ratio", "resolution", "duration", "model"], calls, strict=True
    ):
        assert (await _bad_request(call)).startswith(f"Invalid {field}")


async def test_unknown_ids_are_404(sdk, luma_emulator):
    """get, delete, upscale and audio of an unknown id answer 404."""
    missing = "00000000-0000-4000-8000-000000000000"
    for call in (
        sdk.generations.get(missing),
        sdk.generations.delete(missing),
        sdk.generations.upscale(missing, resolution="4k"),
        sdk.generations.audio(missing, prompt="rain"),
    ):
        with pytest.raises(lumaai.NotFoundError) as info:
            await call
        assert info.value.body == {"detail": "Generation not found"}


async def test_wrong_or_missing_key_is_401(luma_emulator):
    """With an API key set, a wrong or missing bearer token answers 401 on every API route."""
    async with lumaai.AsyncLumaAI(
        auth_token="wrong", base_url=luma_emulator.base_url, max_retries=0
    ) as client:
        with pytest.raises(lumaai.AuthenticationError) as info:
            await client.ping.check()
        assert info.value.body == {"detail": "Invalid API key is provided"}
        with pytest.raises(lumaai.AuthenticationError):
            await client.generations.create(model="ray-2", prompt="a cat")
        with pytest.raises(lumaai.AuthenticationError) as info:
            await client.get("/ping", cast_to=object, options={"headers": {"Authorization": ""}})
        assert info.value.body == {
            "detail": "Malformed Authorization header: expected 'Bearer <key>'"
        }
    assert luma_emulator.inspect.unauthorized == 3
    assert luma_emulator.inspect.creates_total == 0


async def test_no_key_configured_accepts_any_key():
    """Without api_key the emulator accepts any bearer token (but still wants one)."""
    from lumasched.emulator import Emulator

    async with (
        Emulator(speed=1000) as emu,
        lumaai.AsyncLumaAI(auth_token="anything", base_url=emu.base_url, max_retries=0) as client,
    ):
        assert (await client.ping.check()).message == "pong"


async def test_invalid_json_body(luma_emulator, http):
    """A body that is not a JSON object answers 400 {"detail": ...}."""
    from tests._emulator_fixtures import API_KEY

    async with http.post(
        f"{luma_emulator.base_url}/generations/video",
        data=b"[1, 2",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert "detail" in await response.json()


async def test_unknown_api_path_is_json_404(luma_emulator, http):
    """An unknown path or method under the API prefix answers {"detail": ...} too."""
    async with http.get(f"{luma_emulator.base_url}/nothing/here") as response:
        assert response.status == 404
        assert await response.json() == {"detail": "Not Found"}
    async with http.put(f"{luma_emulator.base_url}/ping") as response:
        assert response.status == 405
        assert "detail" in await response.json()
