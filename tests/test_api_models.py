"""Validation rules (the documented "before submission" errors) and tolerant responses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lumasched.api import (
    AudioRequest,
    CharacterRef,
    Generation,
    GenerationKeyframe,
    GenerationState,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframes,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    UpscaleRequest,
    VideoRequest,
    generation_refs,
    replace_generation_refs,
    request_from_dict,
)
from lumasched.api._converter import structure_page, structure_strings
from lumasched.api._validation import problems_of
from lumasched.errors import Problem, ValidationError


def problems(kind: str, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        request_from_dict(kind, data)
    return [str(p) for p in info.value.problems]


IMG = {"type": "image", "url": "https://x/i.jpg"}
GEN = {"type": "generation", "id": "g-1"}

# (kind, data, the problem lines expected)
RULES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("prompt required", "video", {}, ["prompt: Prompt is required"]),
    ("image prompt required", "image", {}, ["prompt: Prompt is required"]),
    (
        "prompt too short",
        "video",
        {"prompt": "ab"},
        ["prompt: Prompt is too short, minimum length is 3 characters"],
    ),
    (
        "prompt too long",
        "image",
        {"prompt": "x" * 5001},
        ["prompt: Prompt is too long, maximum length is 5000 characters"],
    ),
    (
        "empty keyframes",
        "video",
        {"prompt": "abc", "keyframes": {}},
        ["keyframes: No keyframes provided"],
    ),
    (
        "null keyframes",
        "video",
        {"prompt": "abc", "keyframes": {"frame0": None, "frame1": None}},
        ["keyframes: No keyframes provided"],
    ),
    (
        "loop two images",
        "video",
        {"loop": True, "keyframes": {"frame0": IMG, "frame1": IMG}},
        ["loop: Loop is not supported for keyframes"],
    ),
    (
        "loop reverse extend",
        "video",
        {"prompt": "abc", "loop": True, "keyframes": {"frame1": GEN}},
        ["loop: Loop is not supported for extend reverse"],
    ),
    (
        "loop video to image",
        "video",
        {"loop": True, "keyframes": {"frame0": GEN, "frame1": IMG}},
        ["loop: Loop is not supported for interpolate video to image"],
    ),
    (
        "loop image to video",
        "video",
        {"loop": True, "keyframes": {"frame0": IMG, "frame1": GEN}},
        ["loop: Loop is not supported for interpolate image to video"],
    ),
    (
        "loop two videos",
        "video",
        {"prompt": "abc", "loop": True, "keyframes": {"frame0": GEN, "frame1": GEN}},
        ["loop: Loop is not supported for interpolate between two videos"],
    ),
    (
        "extend without prompt",
        "video",
        {"keyframes": {"frame0": GEN}},
        ["prompt: Prompt is required"],
    ),
    (
        "weight above 1",
        "image",
        {"prompt": "abc", "image_ref": [{"url": "u", "weight": 1.5}]},
        ["image_ref[0].weight: must be between 0 and 1 (got 1.5)"],
    ),
    (
        "weight below 0",
        "image",
        {"prompt": "abc", "modify_image_ref": {"url": "u", "weight": -0.1}},
        ["modify_image_ref.weight: must be between 0 and 1 (got -0.1)"],
    ),
    (
        "too many style refs",
        "image",
        {"prompt": "abc", "style_ref": [{"url": "u"}] * 5},
        ["style_ref: at most 4 images (got 5)"],
    ),
    (
        "too many character images",
        "image",
        {"prompt": "abc", "character_ref": {"identity0": {"images": ["u"] * 5}}},
        ["character_ref.identity0.images: needs 1 to 4 images (got 5)"],
    ),
    (
        "no character images",
        "image",
        {"prompt": "abc", "character_ref": {"identity0": {"images": []}}},
        ["character_ref.identity0.images: needs 1 to 4 images (got 0)"],
    ),
    (
        "image model",
        "image",
        {"prompt": "abc", "model": "ray-2"},
        ["model: must be one of photon-1, photon-flash-1 (got 'ray-2')"],
    ),
    (
        "video model",
        "video",
        {"prompt": "abc", "model": "ray-3"},
        ["model: must be one of ray-2, ray-flash-2, ray-1-6 (got 'ray-3')"],
    ),
    (
        "aspect ratio",
        "video",
        {"prompt": "abc", "aspect_ratio": "2:1"},
        ["aspect_ratio: must be one of 1:1, 3:4, 4:3, 9:16, 16:9, 9:21, 21:9 (got '2:1')"],
    ),
    (
        "resolution",
        "video",
        {"prompt": "abc", "resolution": "8k"},
        ["resolution: must be one of 540p, 720p, 1080p, 4k (got '8k')"],
    ),
    (
        "format",
        "image",
        {"prompt": "abc", "format": "gif"},
        ["format: must be one of jpg, png (got 'gif')"],
    ),
    (
        "mode",
        "modify_video",
        {"media": {"url": "m"}, "mode": "wild"},
        [
            "mode: must be one of adhere_1, adhere_2, adhere_3, flex_1, flex_2, flex_3, "
            "reimagine_1, reimagine_2, reimagine_3 (got 'wild')"
        ],
    ),
    (
        "modify model",
        "modify_video",
        {"media": {"url": "m"}, "mode": "flex_1", "model": "ray-1-6"},
        ["model: must be one of ray-2, ray-flash-2 (got 'ray-1-6')"],
    ),
    (
        "duration",
        "video",
        {"prompt": "abc", "duration": "5"},
        ["duration: ray-2 supports duration 5s, 9s (got '5')"],
    ),
    (
        "callback scheme",
        "upscale",
        {"generation_id": "g", "callback_url": "ftp://x"},
        ["callback_url: must be an http:// or https:// URL"],
    ),
    (
        "sync timeout",
        "image",
        {"prompt": "abc", "sync": True, "sync_timeout": 0},
        ["sync_timeout: must be a positive number of seconds"],
    ),
    (
        "reframe crop",
        "reframe_image",
        {
            "media": {"url": "m"},
            "aspect_ratio": "1:1",
            "x_start": 10,
            "x_end": 5,
            "resized_width": 0,
        },
        ["resized_width: must be positive", "x_end: must be greater than x_start"],
    ),
    ("upscale id", "upscale", {"generation_id": ""}, ["generation_id: must be a non-empty string"]),
    ("unknown field", "video", {"prompt": "abc", "promt": "abc"}, ["promt: unknown field"]),
    (
        "nested unknown field",
        "video",
        {"prompt": "abc", "keyframes": {"frame0": {**IMG, "weight": 1}}},
        ["keyframes.frame0.weight: unknown field"],
    ),
    (
        "keyframe type",
        "video",
        {"prompt": "abc", "keyframes": {"frame0": {"type": "video"}}},
        ["keyframes.frame0.type: must be 'image' or 'generation'"],
    ),
    (
        "missing required",
        "reframe_video",
        {"aspect_ratio": "1:1"},
        ["media: required field missing"],
    ),
    (
        "constant generation_type",
        "modify_video",
        {"media": {"url": "m"}, "mode": "flex_1", "generation_type": "video"},
        ["generation_type: must be 'modify_video'"],
    ),
    (
        "wrong type",
        "video",
        {"prompt": "abc", "loop": "yes"},
        ["loop: expected true or false, got str"],
    ),
    ("unknown kind", "gif", {}, ["kind: Unknown request type 'gif'"]),
]


@pytest.mark.parametrize(
    ("kind", "data", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_rule(kind: str, data: dict[str, Any], expected: list[str]) -> None:
    """Each documented rule is reported with its field path and the server's words."""
    assert problems(kind, data) == expected


def test_every_problem_is_reported_at_once() -> None:
    """Type errors, unknown fields and rule violations all come back in one error."""
    got = problems(
        "image",
        {
            "promt": "a cat",
            "model": 5,
            "image_ref": [{"url": "u", "weight": 2}, {"url": "u", "weight": "heavy"}],
            "aspect_ratio": "2:1",
        },
    )
    assert got == [
        "model: expected a string, got int",
        "image_ref[1].weight: expected a number, got str",
        "promt: unknown field",
        "prompt: Prompt is required",
        "aspect_ratio: must be one of 1:1, 3:4, 4:3, 9:16, 16:9, 9:21, 21:9 (got '2:1')",
    ]


def test_validate_on_constructed_request() -> None:
    """.validate() on a hand-built request raises ValidationError with Problem objects."""
    request = VideoRequest(None, loop=True, keyframes=Keyframes(frame1=GenerationKeyframe("g")))
    with pytest.raises(ValidationError) as info:
        request.validate()
    assert info.value.problems == [
        Problem("prompt", "Prompt is required"),
        Problem("loop", "Loop is not supported for extend reverse"),
    ]


def test_image_keyframes_make_the_prompt_optional() -> None:
    """A video from image keyframes alone is valid; extend may loop, a lone frame1 may not."""
    assert request_from_dict("video", {"keyframes": {"frame0": IMG}}).prompt is None
    extend = {"prompt": "abc", "loop": True, "keyframes": {"frame0": GEN}}
    assert request_from_dict("video", extend).loop is True
    with pytest.raises(ValidationError, match="Loop is not supported for extend reverse"):
        request_from_dict("video", {"loop": True, "keyframes": {"frame1": IMG}})


def test_weights_at_the_bounds_are_valid() -> None:
    """0 and 1 are valid weights, four references are allowed."""
    refs = ImageRequest("abc", image_ref=[ImageRef("u", 0), ImageRef("u", 1)] * 2)
    character = ImageRequest("abc", character_ref=CharacterRef.of("a", "b", "c", "d"))
    assert problems_of(refs) == problems_of(character) == []


def test_duration_is_one_the_model_offers() -> None:
    """Durations are the documented 5s and 9s (ray-1-6: 5s only); 10s and 600s are refused."""
    VideoRequest("abc", duration="9s").validate()
    for model, duration in (("ray-2", "10s"), ("ray-2", "600s"), ("ray-1-6", "9s")):
        with pytest.raises(ValidationError):
            VideoRequest("abc", model=model, duration=duration).validate()


def test_requests_are_frozen_and_kind_model_path() -> None:
    """Requests expose kind, model (None for upscale/audio) and the API path."""
    assert (UpscaleRequest("g").kind, UpscaleRequest("g").model) == ("upscale", None)
    assert AudioRequest("a/b c").path == "/generations/a%2Fb%20c/audio"
    reframe = ReframeImageRequest("m", aspect_ratio="1:1")
    assert (reframe.kind, reframe.model) == ("reframe_image", "photon-1")
    assert ModifyVideoRequest("m", mode="adhere_1").kind == "modify_video"
    assert ReframeVideoRequest("m", aspect_ratio="1:1").model == "ray-2"
    with pytest.raises(AttributeError):
        reframe.model = "x"  # type: ignore[misc]


def test_empty_or_dot_id_is_refused() -> None:
    """An empty or dot-segment id raises ValueError before anything is sent."""
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError):
            _ = UpscaleRequest(bad).path


def test_generation_refs_and_replacement() -> None:
    """Dependencies are keyframe generation ids and the upscale/audio source."""
    video = VideoRequest("abc", keyframes=Keyframes(GenerationKeyframe("a"), ImageKeyframe("u")))
    assert generation_refs(video) == ["a"]
    assert generation_refs(UpscaleRequest("b")) == ["b"]
    assert generation_refs(ImageRequest("abc")) == []
    swapped = replace_generation_refs(video, str.upper)
    assert isinstance(swapped, VideoRequest) and swapped.keyframes is not None
    assert swapped.keyframes == Keyframes(GenerationKeyframe("A"), ImageKeyframe("u"))
    assert replace_generation_refs(AudioRequest("x"), str.upper) == AudioRequest("X")


GENERATION = {
    "id": "11111111-2222-3333-4444-555555555555",
    "generation_type": "video",
    "state": "completed",
    "failure_reason": None,
    "created_at": "2025-01-01T00:00:00.000Z",
    "assets": {"video": "https://cdn/v.mp4", "image": "https://cdn/t.jpg", "progress_video": None},
    "model": "ray-2",
    "request": {"model": "ray-2", "prompt": "p", "generation_type": "video"},
}


def test_generation_parses_documented_fields() -> None:
    """A completed generation parses with a tz-aware created_at and its asset URL."""
    gen = Generation.from_json(GENERATION)
    assert gen.state is GenerationState.COMPLETED and gen.is_terminal
    assert gen.created_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert gen.asset_url == "https://cdn/v.mp4"
    assert gen.request == {"model": "ray-2", "prompt": "p", "generation_type": "video"}


def test_generation_tolerates_unknown_fields_and_states() -> None:
    """New states stay strings, new fields are kept, and to_json round-trips them."""
    data = {
        **GENERATION,
        "state": "pending_new_state",
        "new_field": 1,
        "assets": {"video": "u", "extra": "x"},
    }
    gen = Generation.from_json(data)
    assert gen.state == "pending_new_state" and not gen.is_terminal
    assert gen.extra == {"new_field": 1}
    assert Generation.from_json(gen.to_json()) == gen
    assert gen.to_json()["assets"]["extra"] == "x"


def test_generation_minimal_and_image_asset() -> None:
    """Missing fields become None; an image generation's asset_url is the image."""
    gen = Generation.from_json({"id": "g", "assets": {"image": "https://cdn/i.jpg"}})
    assert gen.created_at is None and gen.model is None
    assert gen.asset_url == "https://cdn/i.jpg"
    assert Generation.from_json({"id": "g", "state": "failed"}).is_terminal
    with pytest.raises(ValueError):
        Generation.from_json({"state": "queued"})


def test_page_and_lists() -> None:
    """A list page keeps count/has_more/limit/offset; name lists accept {key} objects."""
    page = structure_page(
        {"generations": [GENERATION], "count": 1, "has_more": True, "limit": 10, "offset": 20}
    )
    assert (page.count, page.has_more, page.limit, page.offset) == (1, True, 10, 20)
    assert page.generations[0].id == GENERATION["id"]
    assert structure_strings(["orbit_left", {"key": "dolly_zoom"}]) == ["orbit_left", "dolly_zoom"]


def test_public_surface_is_sorted_and_importable() -> None:
    """lumasched.api.__all__ is sorted and every name in it exists."""
    import lumasched.api as api

    assert api.__all__ == sorted(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)
