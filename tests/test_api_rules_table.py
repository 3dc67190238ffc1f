"""The shared rule table (lumasched/api/_rules.py), enumerated on both sides:
every row is accepted by both the client and the emulator, or refused by both
with the same words."""
# ruff: noqa: F811  (pytest fixtures are imported by name, then requested as arguments)

from __future__ import annotations

from typing import Any

import attrs
import lumaai
import pytest

from lumasched.api import (
    CreateRequest,
    GenerationKeyframe,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframes,
    VideoRequest,
)
from lumasched.api._models import RESOLUTIONS
from lumasched.api._rules import (
    LOOP_REFUSED,
    VIDEO_MODEL_RULES,
    WEIGHTED_REFS,
    duration_rule_problem,
    resolution_rule_problem,
    weight_rule_problem,
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

SOURCE = "00000000-0000-4000-8000-000000000000"
"""Stands for a completed generation (the emulator test swaps in a real one)."""
IMAGE_URL = "https://example.invalid/frame.jpg"
DURATIONS = ("5s", "9s", "10s", "600s", "7s", "5", "5.5s")
WEIGHTS = (0, 0.05, 0.5, 1, 1.0, -0.1, 1.5, 2, True, "0.5")

# (request, the problem's path, the problem both sides report or None when both accept)
Row = tuple[CreateRequest, str, str | None]


def _model_rows() -> list[Row]:
    rows: list[Row] = []
    for model in VIDEO_MODEL_RULES:
        for resolution in RESOLUTIONS:
            request = VideoRequest("a calm lake at dawn", model=model, resolution=resolution)
            rows.append((request, "resolution", resolution_rule_problem(model, resolution)))
        for duration in DURATIONS:
            request = VideoRequest("a calm lake at dawn", model=model, duration=duration)
            rows.append((request, "duration", duration_rule_problem(model, duration)))
    return rows


def _weight_rows() -> list[Row]:
    rows: list[Row] = []
    base = ImageRequest("a calm lake at dawn", model="photon-flash-1")
    for ref in WEIGHTED_REFS:
        for weight in WEIGHTS:
            image = ImageRef(IMAGE_URL, weight=weight)  # type: ignore[arg-type]
            if ref == "modify_image_ref":
                request, path = attrs.evolve(base, modify_image_ref=image), f"{ref}.weight"
            else:
                request, path = attrs.evolve(base, **{ref: (image,)}), f"{ref}[0].weight"
            rows.append((request, path, weight_rule_problem(weight)))
    return rows


def _frame(kind: str | None) -> ImageKeyframe | GenerationKeyframe | None:
    if kind == "image":
        return ImageKeyframe(IMAGE_URL)
    return GenerationKeyframe(SOURCE) if kind == "generation" else None


def _loop_rows() -> list[Row]:
    rows: list[Row] = []
    kinds = (None, "image", "generation")
    for first in kinds:
        for last in kinds:
            if first is None and last is None:
                continue
            for loop in (True, False):
                keyframes = Keyframes(frame0=_frame(first), frame1=_frame(last))
                request = VideoRequest(
                    "a calm lake at dawn", model="ray-flash-2", keyframes=keyframes, loop=loop
                )
                rows.append((request, "loop", LOOP_REFUSED.get((first, last)) if loop else None))
    return rows


ROWS = _model_rows() + _weight_rows() + _loop_rows()
IDS = [f"{path}-{i}" for i, (_, path, _) in enumerate(ROWS)]


def test_the_docs_cases_are_in_the_table() -> None:
    """The cases the issue found drifting are refused by the table."""
    assert duration_rule_problem("ray-2", "600s") is not None
    assert duration_rule_problem("ray-1-6", "9s") is not None
    assert resolution_rule_problem("ray-1-6", "4k") is not None
    assert resolution_rule_problem("ray-flash-2", "4k") is None
    assert weight_rule_problem(2) is not None and weight_rule_problem(1.5) is not None
    assert LOOP_REFUSED[(None, "image")] == "Loop is not supported for extend reverse"
    assert sum(problem is not None for _, _, problem in ROWS) >= 40


@pytest.mark.parametrize(("request_", "path", "problem"), ROWS, ids=IDS)
def test_client_applies_the_table(request_: CreateRequest, path: str, problem: str | None) -> None:
    """Client validation accepts or refuses each row with the row's message."""
    expected = [] if problem is None else [Problem(path, problem)]
    assert problems_of(request_) == expected


def _emulator_detail(path: str, problem: str) -> str:
    if path == "loop":
        return problem
    if path in ("duration", "resolution"):
        return f"Invalid {path}: {problem}"
    return f"{path} {problem}"


@pytest.mark.parametrize(("request_", "path", "problem"), ROWS, ids=IDS)
async def test_emulator_applies_the_table(
    sdk: lumaai.AsyncLumaAI,
    luma_emulator: Any,
    request_: CreateRequest,
    path: str,
    problem: str | None,
) -> None:
    """The emulator creates what the client accepts and answers 400 with the
    same words to what the client refuses."""
    body = request_.to_body()
    if SOURCE in str(body):
        source = await sdk.generations.create(model="ray-flash-2", prompt="a calm lake")
        assert source.id is not None
        await wait_terminal(sdk, source.id)
        for frame in body["keyframes"].values():
            if frame.get("id") == SOURCE:
                frame["id"] = source.id
    detail = None if problem is None else _emulator_detail(path, problem)
    await expect_create(sdk, luma_emulator, request_.path, body, detail)
