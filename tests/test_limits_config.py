"""Limits: the Build tier default and the TOML limits file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumasched import ConfigurationError, Family, Limits
from lumasched.limits import family_of


def test_default_is_build_tier() -> None:
    """With no file, limits are the published Build tier."""
    limits = Limits()
    v, i = limits.video, limits.image
    assert (v.concurrency, v.requests, v.per_seconds) == (10, 20, 60)
    assert (i.concurrency, i.requests, i.per_seconds) == (40, 80, 60)
    assert Limits.tier("build") == limits


def test_toml_overrides_only_what_it_names(tmp_path: Path) -> None:
    """A limits file changes the fields it names and keeps the rest at Build tier."""
    path = tmp_path / "limits.toml"
    path.write_text("[video]\nconcurrency = 3\nper_seconds = 2.5\n")
    limits = Limits.from_toml(path)
    assert limits.video.concurrency == 3
    assert limits.video.per_seconds == 2.5
    assert limits.video.requests == 20
    assert limits.image == Limits().image


def test_toml_errors_name_file_and_field(tmp_path: Path) -> None:
    """Every bad field is reported with the file and the field path."""
    path = tmp_path / "limits.toml"
    path.write_text("[video]\nconcurrency = 0\nrequets = 5\n[audio]\nx = 1\n")
    with pytest.raises(ConfigurationError) as info:
        Limits.from_toml(path)
    text = str(info.value)
    assert f"{path}: video.concurrency: must be a positive integer, got 0" in text
    assert f"{path}: video.requets: unknown field (expected concurrency, " in text
    assert f"{path}: audio: unknown field (expected video, image)" in text


def test_a_section_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    """``video = 5`` and a number given as text name their field; good fields parse."""
    path = tmp_path / "limits.toml"
    path.write_text('video = 5\n[image]\nper_seconds = "60"\nrequests = 2.5\n')
    with pytest.raises(ConfigurationError) as info:
        Limits.from_toml(path)
    assert str(info.value).splitlines() == [
        "invalid limits:",
        f"{path}: video: must be a table",
        f"{path}: image.requests: must be a positive integer, got 2.5",
        f"{path}: image.per_seconds: must be a positive number, got '60'",
    ]


def test_unknown_tier_is_a_clear_error() -> None:
    """Only the Build tier is published; anything else points at --limits."""
    with pytest.raises(ConfigurationError, match="--limits"):
        Limits.tier("scale")


@pytest.mark.parametrize(
    ("kind", "model", "family"),
    [
        ("image", "photon-1", Family.IMAGE),
        ("reframe_image", "photon-flash-1", Family.IMAGE),
        ("video", "ray-2", Family.VIDEO),
        ("reframe_video", "ray-flash-2", Family.VIDEO),
        ("modify_video", "ray-2", Family.VIDEO),
        ("upscale", None, Family.VIDEO),
        ("audio", None, Family.VIDEO),
    ],
)
def test_family_of_request_kind(kind: str, model: str | None, family: Family) -> None:
    """Each request kind counts against the documented family."""
    assert family_of(kind, model) is family
