"""Media that honour the request: duration, frame size, upscale size, audio track."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

import io
from typing import Any

import av
import lumaai
import pytest

from lumasched.emulator._assets import VideoShape, video_bytes
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    API_KEY,
    check_assets,
    http,
    luma_emulator,
    luma_emulator_config,
    open_image,
    sdk,
    wait_terminal,
)


def probe(data: bytes) -> dict[str, Any]:
    """What a user's pipeline would check: frames, size, seconds, and the audio track."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        found: dict[str, Any] = {
            "frames": frames,
            "size": (video.codec_context.width, video.codec_context.height),
            "seconds": frames / float(video.average_rate or 24),
            "audio_seconds": None,
        }
    with av.open(io.BytesIO(data)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            found["audio_seconds"] = samples / stream.sample_rate
    return found


@pytest.mark.parametrize(
    ("model", "duration", "resolution", "aspect_ratio", "size"),
    [
        ("ray-2", "5s", "720p", "16:9", (160, 90)),
        ("ray-2", "9s", "1080p", "16:9", (240, 136)),
        ("ray-flash-2", "9s", "4k", "9:16", (270, 480)),
        ("ray-flash-2", "5s", "540p", "21:9", (158, 68)),
        ("ray-1-6", None, None, "1:1", (90, 90)),
    ],
)
async def test_video_has_the_requested_duration_and_size(
    luma_emulator, http, model, duration, resolution, aspect_ratio, size
):
    """Frame count is 24 x the duration; the frame is the real size / 8 for the ratio."""
    fields = {"duration": duration, "resolution": resolution, "aspect_ratio": aspect_ratio}
    # Not strict: the SDK's types do not know ray-1-6, whatever a server answers.
    async with lumaai.AsyncLumaAI(
        auth_token=API_KEY, base_url=luma_emulator.base_url, max_retries=0
    ) as client:
        created = await client.generations.create(
            model=model, prompt="a calm lake", **{k: v for k, v in fields.items() if v}
        )
        files = await check_assets(http, await wait_terminal(client, created.id))
    found = probe(files["video"])
    seconds = int((duration or "5s").removesuffix("s"))
    assert (found["frames"], found["size"]) == (24 * seconds, size)
    assert found["seconds"] == seconds
    assert found["audio_seconds"] is None
    assert open_image(files["image"]).size == size  # the thumbnail is a frame's size


async def test_upscale_is_larger_and_audio_adds_a_track(sdk, luma_emulator, http):
    """4k upscale of a 720p 9 s video is 4x the width, same length; add_audio gives an
    AAC track as long as the video; upscaling that keeps its sound."""
    source = await sdk.generations.create(
        model="ray-2", prompt="a calm lake", duration="9s", resolution="720p"
    )
    await wait_terminal(sdk, source.id)
    upscaled = await sdk.generations.upscale(source.id, resolution="4k")
    voiced = await sdk.generations.audio(source.id, prompt="rain on water")
    results = {}
    for name, generation in (("source", source), ("4k", upscaled), ("audio", voiced)):
        files = await check_assets(http, await wait_terminal(sdk, generation.id))
        results[name] = probe(files["video"])
    assert results["source"]["size"] == (160, 90)
    assert results["4k"]["size"] == (480, 270) and results["4k"]["frames"] == 216
    assert results["4k"]["audio_seconds"] is None
    assert results["audio"]["size"] == (160, 90) and results["audio"]["frames"] == 216
    assert results["audio"]["audio_seconds"] == pytest.approx(9.0, abs=0.05)
    loud = await sdk.generations.upscale(voiced.id, resolution="1080p")
    found = probe((await check_assets(http, await wait_terminal(sdk, loud.id)))["video"])
    assert found["size"] == (240, 136)
    assert found["audio_seconds"] == pytest.approx(9.0, abs=0.05)


@pytest.mark.parametrize(
    ("aspect_ratio", "size"),
    [("16:9", (256, 144)), ("9:16", (144, 256)), ("1:1", (192, 192)), ("21:9", (304, 128))],
)
async def test_image_size_follows_the_aspect_ratio(sdk, luma_emulator, http, aspect_ratio, size):
    """Images are the docs' size for the ratio, scaled by image_scale (1/8)."""
    created = await sdk.generations.image.create(
        model="photon-flash-1", prompt="a cat", aspect_ratio=aspect_ratio
    )
    files = await check_assets(http, await wait_terminal(sdk, created.id))
    assert open_image(files["image"]).size == size


def test_each_shape_is_built_once():
    """A shape's MP4 is built once and then served from the cache."""
    shape = VideoShape("4:3", "1080p", 9, True)
    assert video_bytes(shape) is video_bytes(shape)
    assert probe(video_bytes(shape))["size"] == (180, 136)
