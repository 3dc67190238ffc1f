"""Prompts: the client and the emulator apply one rule (durations, resolutions,
weights and loops: tests/test_api_rules_table.py)."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

from typing import Any

import attrs
import lumaai
import pytest

from lumasched.api import (
    AudioRequest,
    CreateRequest,
    ImageRequest,
    ModifyVideoRequest,
    ReframeImageRequest,
    ReframeVideoRequest,
    VideoRequest,
)
from lumasched.api._validation import problems_of
from lumasched.errors import Problem
from tests._emulator_fixtures import (  # noqa: F401 (fixtures)
    expect_create,
    luma_emulator,
    luma_emulator_config,
    sdk,
    wait_terminal,
)

CLIP = "https://example.invalid/clip.mp4"
SHORT = "Prompt is too short, minimum length is 3 characters"
LONG = "Prompt is too long, maximum length is 5000 characters"
REQUIRED = "Prompt is required"
TOO_LONG = "x" * 5001


BASES: dict[str, CreateRequest] = {
    "video": VideoRequest("a calm lake at dawn", model="ray-flash-2"),
    "image": ImageRequest("a calm lake at dawn", model="photon-flash-1"),
    "reframe_image": ReframeImageRequest(
        "https://example.invalid/in.jpg", aspect_ratio="9:16", model="photon-flash-1"
    ),
    "reframe_video": ReframeVideoRequest(CLIP, aspect_ratio="9:16", model="ray-flash-2"),
    "modify_video": ModifyVideoRequest(CLIP, mode="flex_1", model="ray-flash-2"),
    "audio": AudioRequest("set-by-the-test"),
}

# (kind, field, value, the problem both sides report or None when both accept)
RULES: list[tuple[str, str, Any, str | None]] = [
    ("video", "prompt", "ab", SHORT),
    ("video", "prompt", TOO_LONG, LONG),
    ("video", "prompt", None, REQUIRED),
    ("image", "prompt", "", SHORT),
    ("image", "prompt", None, REQUIRED),
    ("image", "prompt", "cat", None),
    ("reframe_image", "prompt", None, None),
    ("reframe_image", "prompt", "", None),
    ("reframe_image", "prompt", "ab", SHORT),
    ("reframe_image", "prompt", TOO_LONG, LONG),
    ("reframe_image", "prompt", "more sky", None),
    ("reframe_video", "prompt", "", None),
    ("reframe_video", "prompt", "ab", SHORT),
    ("reframe_video", "prompt", TOO_LONG, LONG),
    ("modify_video", "prompt", "", None),
    ("modify_video", "prompt", "ab", SHORT),
    ("modify_video", "prompt", TOO_LONG, LONG),
    ("modify_video", "prompt", "make it anime", None),
    ("audio", "prompt", None, None),
    ("audio", "prompt", "", None),
    ("audio", "prompt", "ab", SHORT),
    ("audio", "prompt", TOO_LONG, LONG),
    ("audio", "prompt", "rain", None),
    ("audio", "negative_prompt", "", None),
    ("audio", "negative_prompt", "ab", SHORT),
    ("audio", "negative_prompt", TOO_LONG, LONG),
    ("audio", "negative_prompt", "music", None),
]
IDS = [f"{kind}-{field}-{str(value)[:8]!r}" for kind, field, value, _ in RULES]


def _request(kind: str, field: str, value: Any, **more: Any) -> CreateRequest:
    return attrs.evolve(BASES[kind], **{field: value}, **more)


@pytest.mark.parametrize(("kind", "field", "value", "problem"), RULES, ids=IDS)
def test_client_applies_the_rule(kind: str, field: str, value: Any, problem: str | None) -> None:
    """Client validation accepts or refuses each row with the row's message."""
    expected = [] if problem is None else [Problem(field, problem)]
    assert problems_of(_request(kind, field, value)) == expected


@pytest.mark.parametrize(("kind", "field", "value", "problem"), RULES, ids=IDS)
async def test_emulator_applies_the_rule(
    sdk: lumaai.AsyncLumaAI,
    luma_emulator: Any,
    kind: str,
    field: str,
    value: Any,
    problem: str | None,
) -> None:
    """The emulator creates what the client accepts, and answers 400 with the
    row's message to what the client refuses."""
    more: dict[str, Any] = {}
    if kind == "audio":
        source = await sdk.generations.create(model="ray-flash-2", prompt="a calm lake")
        assert source.id is not None
        await wait_terminal(sdk, source.id)
        more["generation_id"] = source.id
    request = _request(kind, field, value, **more)
    detail = None
    if problem is not None:
        detail = problem if field == "prompt" else f"{field}: {problem}"
    await expect_create(sdk, luma_emulator, request.path, request.to_body(), detail)
