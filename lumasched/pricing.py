"""What a generation costs, in USD cents, from its JSON request body.

Video is priced per pixel, as Luma documents it: ``width * height * 24 fps *
seconds`` pixels at ``ray-2`` $0.01582 and ``ray-flash-2`` $0.00544 per million
pixels (so ``ray-2``, 720p, 5 s, 16:9 is 1280 x 720 x 24 x 5 = 110.6 M pixels =
$1.75). Luma publishes no per-image or upscale/audio figures, so those rows are
lumasched's own documented assumptions; override any of them with a file::

    # prices.toml
    [video_usd_per_megapixel]
    ray-2 = 0.01582

    [image_usd_per_image]
    photon-1 = 0.015

    upscale_usd_per_megapixel = 0.00544

The same table prices the emulator's credits and ``lumasched run --dry-run``.
It works on the JSON body (the dict a request serialises to), so it does not
depend on the client's models.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import attrs

from lumasched.api import _models as api_models
from lumasched.api._converter import config_from_dict, register_config
from lumasched.errors import ConfigurationError

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_PRICES",
    "RESOLUTIONS",
    "PriceTable",
    "estimate_cost_cents",
    "video_dimensions",
]


def _short_side(resolution: str) -> int:
    return 2160 if resolution == "4k" else int(resolution.removesuffix("p"))


# The names are the wire's (lumasched.api), defined once; the geometry follows from them.
RESOLUTIONS: Mapping[str, int] = MappingProxyType(
    {name: _short_side(name) for name in api_models.RESOLUTIONS}
)
"""Resolution name -> pixels on the short side of the frame."""

ASPECT_RATIOS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {name: (int(name.split(":")[0]), int(name.split(":")[1])) for name in api_models.ASPECT_RATIOS}
)
"""Aspect ratio name -> (width, height) proportions."""

DEFAULT_ASPECT_RATIO = "16:9"
DEFAULT_RESOLUTION = "720p"
DEFAULT_DURATION = "5s"


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping))


def video_dimensions(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) of a video frame: the short side is the resolution's height.

    >>> video_dimensions("720p", "16:9")
    (1280, 720)
    """
    try:
        short = RESOLUTIONS[resolution]
        w, h = ASPECT_RATIOS[aspect_ratio]
    except KeyError as exc:
        raise ValueError(f"unknown resolution or aspect ratio: {exc.args[0]!r}") from None
    if w >= h:
        return 2 * round(short * w / h / 2), short
    return short, 2 * round(short * h / w / 2)


def _duration_seconds(duration: str) -> float:
    text = duration.strip().removesuffix("s")
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"unknown duration {duration!r}") from None
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"unknown duration {duration!r}")
    return seconds


@attrs.frozen
class PriceTable:
    """Prices in USD. Every field can be overridden (``PriceTable.from_file``)."""

    video_usd_per_megapixel: Mapping[str, float] = attrs.field(
        factory=lambda: {"ray-2": 0.01582, "ray-flash-2": 0.00544, "ray-1-6": 0.01582},
        converter=_frozen,
    )
    """Per million output pixels (width x height x fps x seconds). ray-1-6 is
    unpublished and priced as ray-2."""
    image_usd_per_image: Mapping[str, float] = attrs.field(
        factory=lambda: {"photon-1": 0.015, "photon-flash-1": 0.004},
        converter=_frozen,
    )
    """Per image (also reframe image). An assumption: Luma publishes no figure."""
    upscale_usd_per_megapixel: float = 0.00544
    """Upscale, per million pixels at the *target* resolution, for the source's
    aspect ratio and length when the body carries them, else 16:9 and
    ``assumed_seconds``. An assumption."""
    audio_usd: float = 0.02
    """Adding audio, per generation. An assumption."""
    fps: int = 24
    assumed_seconds: float = 5.0
    """Length assumed for bodies that carry none (reframe, modify, upscale)."""
    assumed_resolution: str = DEFAULT_RESOLUTION
    """Resolution assumed for reframe and modify video (their bodies carry none)."""
    default_video_model: str = "ray-2"
    default_image_model: str = "photon-1"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "prices") -> Self:
        """A table from a mapping; fields left out keep their defaults, the two
        per-model tables are merged into the defaults. Through the wire's
        converter: every problem at once, one ``SOURCE: field: problem`` line each."""
        default = cls()
        values = dict(data)
        for name in _PER_MODEL:
            given = values.get(name)
            if isinstance(given, Mapping):
                values[name] = {**getattr(default, name), **given}
        return config_from_dict(values, cls, source=source, what="prices")

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Read a ``.toml`` or ``.json`` price file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read price file: {exc}") from exc
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{path}: not a valid price file: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path}: a price file must hold a table")
        return cls.from_mapping(data, source=str(path))

    def video_usd(self, model: str, resolution: str, aspect_ratio: str, seconds: float) -> float:
        try:
            rate = self.video_usd_per_megapixel[model]
        except KeyError:
            raise ValueError(f"no video price for model {model!r}") from None
        width, height = video_dimensions(resolution, aspect_ratio)
        return width * height * self.fps * seconds / 1e6 * rate

    def image_usd(self, model: str) -> float:
        try:
            return self.image_usd_per_image[model]
        except KeyError:
            raise ValueError(f"no image price for model {model!r}") from None

    def cost_usd(self, kind: str, body: Mapping[str, Any]) -> float:
        """The price in USD of one request of ``kind`` with JSON ``body``."""

        def get(key: str, default: str) -> str:
            value = body.get(key)
            return default if value is None else str(value)

        if kind in ("image", "reframe_image"):
            return self.image_usd(get("model", self.default_image_model))
        if kind == "video":
            return self.video_usd(
                get("model", self.default_video_model),
                get("resolution", DEFAULT_RESOLUTION),
                get("aspect_ratio", DEFAULT_ASPECT_RATIO),
                _duration_seconds(get("duration", DEFAULT_DURATION)),
            )
        if kind in ("reframe_video", "modify_video"):
            return self.video_usd(
                get("model", self.default_video_model),
                self.assumed_resolution,
                get("aspect_ratio", DEFAULT_ASPECT_RATIO),
                self.assumed_seconds,
            )
        if kind == "upscale":
            # The body names only the target; a caller that knows the source
            # (the emulator) adds its aspect_ratio and duration.
            width, height = video_dimensions(
                get("resolution", "1080p"), get("aspect_ratio", DEFAULT_ASPECT_RATIO)
            )
            seconds = _duration_seconds(body["duration"]) if body.get("duration") else None
            pixels = width * height * self.fps * (seconds or self.assumed_seconds)
            return pixels / 1e6 * self.upscale_usd_per_megapixel
        if kind == "audio":
            return self.audio_usd
        raise ValueError(f"unknown request kind {kind!r}")


_PER_MODEL = ("video_usd_per_megapixel", "image_usd_per_image")


def _per_model(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise TypeError("must be a table of model names to prices")
    for model, price in value.items():
        _price(price, what=f"the price of {model!r}")
    return {str(model): float(price) for model, price in value.items()}


def _price(value: Any, *, what: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{what}{' ' if what else ''}must be a non-negative number, got {value!r}")
    return float(value)


def _positive(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return value


register_config(
    PriceTable,
    video_usd_per_megapixel=_per_model,
    image_usd_per_image=_per_model,
    upscale_usd_per_megapixel=_price,
    audio_usd=_price,
    fps=_positive,
    assumed_seconds=_positive,
)

DEFAULT_PRICES = PriceTable()


def estimate_cost_cents(
    kind: str, body: Mapping[str, Any], table: PriceTable | None = None
) -> float:
    """Estimated cost in USD cents of one request (``kind`` as in ``family_of``).

    >>> round(estimate_cost_cents("video", {"model": "ray-2", "resolution": "720p",
    ...                                     "duration": "5s", "aspect_ratio": "16:9"}))
    175

    Raises ``ValueError`` for a model, resolution, aspect ratio or duration the
    table cannot price.
    """
    return (table or DEFAULT_PRICES).cost_usd(kind, body) * 100.0
