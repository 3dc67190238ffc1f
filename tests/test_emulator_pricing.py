"""The price table: documented per-pixel video prices, image table, overrides from files."""

from __future__ import annotations

import json

import lumaai
import pytest

from lumasched.emulator import Emulator
from lumasched.errors import ConfigurationError
from lumasched.pricing import PriceTable, estimate_cost_cents, video_dimensions
from lumasched.testing import fast_emulator_config
from tests._emulator_fixtures import wait_terminal


def test_documented_video_examples():
    """ray-2 720p 5 s 16:9 is $1.75 and ray-flash-2 is $0.60, as in the docs."""
    body = {"resolution": "720p", "duration": "5s", "aspect_ratio": "16:9"}
    assert round(estimate_cost_cents("video", {"model": "ray-2", **body})) == 175
    assert round(estimate_cost_cents("video", {"model": "ray-flash-2", **body})) == 60


def test_defaults_and_scaling():
    """Missing fields take the API defaults; 9 s and 4k cost proportionally more."""
    base = estimate_cost_cents("video", {"model": "ray-2"})
    assert base == pytest.approx(estimate_cost_cents("video", {"model": "ray-2", "duration": "5s"}))
    assert estimate_cost_cents("video", {"model": "ray-2", "duration": "9s"}) == pytest.approx(
        base * 9 / 5
    )
    assert estimate_cost_cents("video", {"model": "ray-2", "resolution": "4k"}) == pytest.approx(
        base * 9
    )


def test_dimensions_short_side_is_the_resolution():
    """Frames keep the resolution on the short side for every aspect ratio."""
    assert video_dimensions("1080p", "16:9") == (1920, 1080)
    assert video_dimensions("720p", "9:16") == (720, 1280)
    assert video_dimensions("540p", "1:1") == (540, 540)
    assert video_dimensions("720p", "21:9") == (1680, 720)


def test_other_kinds_are_priced():
    """Images, reframes, modify, upscale and audio all have a documented price."""
    assert estimate_cost_cents("image", {"model": "photon-1"}) == pytest.approx(1.5)
    assert estimate_cost_cents("image", {"model": "photon-flash-1"}) == pytest.approx(0.4)
    assert estimate_cost_cents("reframe_image", {"model": "photon-flash-1"}) == pytest.approx(0.4)
    assert estimate_cost_cents("modify_video", {"model": "ray-2"}) == pytest.approx(
        estimate_cost_cents("video", {"model": "ray-2"})
    )
    assert estimate_cost_cents("reframe_video", {"model": "ray-flash-2", "aspect_ratio": "1:1"}) > 0
    assert estimate_cost_cents("upscale", {"resolution": "4k"}) > estimate_cost_cents(
        "upscale", {"resolution": "1080p"}
    )
    assert estimate_cost_cents("audio", {}) == pytest.approx(2.0)


def test_unpriceable_requests_raise():
    """Unknown kinds, models, resolutions or durations raise ValueError."""
    for kind, body in [
        ("cartoon", {}),
        ("video", {"model": "ray-9"}),
        ("video", {"model": "ray-2", "resolution": "8k"}),
        ("video", {"model": "ray-2", "duration": "long"}),
        ("image", {"model": "photon-9"}),
    ]:
        with pytest.raises(ValueError):
            estimate_cost_cents(kind, body)


def test_override_from_toml_and_json(tmp_path):
    """A price file overrides some prices and keeps the other defaults."""
    toml = tmp_path / "prices.toml"
    toml.write_text('audio_usd = 0.5\n[image_usd_per_image]\n"photon-1" = 0.1\n')
    table = PriceTable.from_file(toml)
    assert estimate_cost_cents("audio", {}, table) == pytest.approx(50)
    assert estimate_cost_cents("image", {"model": "photon-1"}, table) == pytest.approx(10)
    assert estimate_cost_cents("image", {"model": "photon-flash-1"}, table) == pytest.approx(0.4)
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"video_usd_per_megapixel": {"ray-2": 0.0}}))
    assert estimate_cost_cents("video", {"model": "ray-2"}, PriceTable.from_file(as_json)) == 0


def test_bad_price_files(tmp_path):
    """Unknown fields, bad values and unreadable files are configuration errors."""
    bad = tmp_path / "bad.toml"
    bad.write_text("discount = 1\n")
    with pytest.raises(ConfigurationError, match="discount"):
        PriceTable.from_file(bad)
    bad.write_text('[image_usd_per_image]\n"photon-1" = "cheap"\n')
    with pytest.raises(ConfigurationError):
        PriceTable.from_file(bad)
    bad.write_text("fps = 0\naudio_usd = -1\nvideo_usd_per_megapixel = 5\ndiscount = 1\n")
    with pytest.raises(ConfigurationError) as info:
        PriceTable.from_file(bad)
    assert str(info.value).splitlines() == [
        "invalid prices:",
        f"{bad}: video_usd_per_megapixel: must be a table of model names to prices",
        f"{bad}: audio_usd: must be a non-negative number, got -1",
        f"{bad}: fps: must be a positive number, got 0",
        f"{bad}: discount: unknown field (expected video_usd_per_megapixel, "
        "image_usd_per_image, upscale_usd_per_megapixel, audio_usd, fps, assumed_seconds, "
        "assumed_resolution, default_video_model, default_image_model)",
    ]
    with pytest.raises(ConfigurationError):
        PriceTable.from_file(tmp_path / "missing.toml")


async def test_a_create_the_balance_cannot_cover_is_402():
    """A create costing more than the balance is refused with 402 and not charged;
    a cheaper one still goes through."""
    async with (
        Emulator(fast_emulator_config(credit_balance_cents=100.0)) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url, max_retries=0) as client,
    ):
        with pytest.raises(lumaai.APIStatusError) as info:
            await client.generations.create(model="ray-2", prompt="a teddy bear")
        assert info.value.status_code == 402
        assert info.value.body["detail"] == (
            "Insufficient credits: this generation costs $1.75, the balance is $1.00"
        )
        assert emu.inspect.creates_total == 0 and emu.credit_balance_cents == 100.0
        assert (await client.generations.list()).count == 0
        await client.generations.image.create(model="photon-1", prompt="a cat")
        assert emu.credit_balance_cents == pytest.approx(98.5)


async def test_monthly_usage_cap_counts_charges_less_refunds():
    """With a monthly cap, a create past it is 402; a failed (refunded) job uses none of it."""
    config = fast_emulator_config(monthly_usage_cap_cents=200.0)
    async with (
        Emulator(config) as emu,
        lumaai.AsyncLumaAI(auth_token="k", base_url=emu.base_url, max_retries=0) as client,
    ):
        failing = await client.generations.create(model="ray-2", prompt="a cat fail:dispatch")
        await wait_terminal(client, failing.id)
        await client.generations.create(model="ray-2", prompt="a teddy bear")
        with pytest.raises(lumaai.APIStatusError) as info:
            await client.generations.create(model="ray-2", prompt="another bear")
        assert info.value.status_code == 402
        assert info.value.body["detail"].startswith("Monthly usage limit reached: $2.00 per month")
        assert emu.inspect.creates_total == 2


def test_upscale_is_priced_on_the_source_shape_when_known():
    """An upscale body with the source's aspect ratio and length is priced on them;
    without them, 16:9 for the assumed 5 s."""
    plain = estimate_cost_cents("upscale", {"resolution": "4k"})
    assert estimate_cost_cents("upscale", {"resolution": "4k", "duration": "5s"}) == plain
    assert estimate_cost_cents(
        "upscale", {"resolution": "4k", "duration": "9s", "aspect_ratio": "16:9"}
    ) == pytest.approx(plain * 9 / 5)
    assert estimate_cost_cents(
        "upscale", {"resolution": "4k", "aspect_ratio": "1:1"}
    ) == pytest.approx(plain * 2160 / 3840)
