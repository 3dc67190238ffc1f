"""The emulator's settings: ``EmulatorConfig`` and the fault-injection knobs ``Faults``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import attrs

from lumasched.emulator._failures import failure_rates
from lumasched.limits import Limits
from lumasched.pricing import PriceTable

__all__ = ["DEFAULT_BLACKLIST", "ROUTES", "EmulatorConfig", "Faults"]

DEFAULT_BLACKLIST: tuple[str, ...] = ("blacklisted", "nsfw", "gore", "explicit")
"""Words that make a prompt end ``failed`` with "Contains blacklisted words"
(whole words, any case)."""

ROUTES: tuple[str, ...] = (
    "create",
    "get",
    "list",
    "delete",
    "concepts",
    "camera_motions",
    "credits",
    "ping",
    "asset",
)
"""Route names that fault rates can target (``"*"`` targets every route)."""


def _rate(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


def _route_rates(value: Mapping[str, float] | float) -> Mapping[str, float]:
    rates = {"*": float(value)} if isinstance(value, int | float) else dict(value)
    for route, rate in rates.items():
        if route != "*" and route not in ROUTES:
            raise ValueError(f"unknown route {route!r} (expected one of {', '.join(ROUTES)}, *)")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {route!r} must be within [0, 1], got {rate!r}")
    return MappingProxyType(rates)


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _error_status(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP error status (400-599), got {value!r}")


@attrs.frozen
class Faults:
    """Fault injection, all off by default. Rates are probabilities in [0, 1].

    ``server_errors`` and ``rate_limits`` take either one rate for every route
    or a mapping ``{route: rate}`` with route names from ``ROUTES`` (or ``"*"``).
    """

    server_errors: Mapping[str, float] = attrs.field(factory=dict, converter=_route_rates)
    """Answer this fraction of requests with ``server_error_status`` (nothing happens)."""
    server_error_status: int = attrs.field(default=500, validator=_error_status)
    rate_limits: Mapping[str, float] = attrs.field(factory=dict, converter=_route_rates)
    """Answer this fraction of requests with 429 (nothing happens)."""
    drop_after_create: float = attrs.field(default=0.0, validator=_rate)
    """Accept (and bill) this fraction of creates, then close the connection unanswered."""
    create_response_delay: float = attrs.field(default=0.0, validator=_non_negative)
    """Accept each create, then wait this many seconds before answering."""
    cut_downloads: float = attrs.field(default=0.0, validator=_rate)
    """Cut this fraction of asset downloads half way through the body."""
    download_bytes_per_second: float | None = attrs.field(default=None, validator=_non_negative)
    """Throttle asset downloads to this rate."""
    expire_urls_issued_before: float | None = attrs.field(default=None, validator=_non_negative)
    """Asset URLs signed before this UNIX time answer 403 as expired (see
    ``Emulator.expire_asset_urls``)."""

    def rate_for(self, table: Mapping[str, float], route: str) -> float:
        return table.get(route, table.get("*", 0.0))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Faults from JSON-like data (what ``POST /_emulator/faults`` accepts)."""
        names = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {
            "server_errors": dict(self.server_errors),
            "server_error_status": self.server_error_status,
            "rate_limits": dict(self.rate_limits),
            "drop_after_create": self.drop_after_create,
            "create_response_delay": self.create_response_delay,
            "cut_downloads": self.cut_downloads,
            "download_bytes_per_second": self.download_bytes_per_second,
            "expire_urls_issued_before": self.expire_urls_issued_before,
        }


def _words(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class EmulatorConfig:
    """How the emulator behaves. Every field has a default; ``Emulator(**overrides)``
    builds one from keyword arguments.

    Times: the latency model's seconds are divided by ``speed``;
    ``fixed_latency`` is wall-clock seconds (not scaled) and replaces the model;
    limit windows (``Limits.per_seconds``) are wall-clock seconds.
    """

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    api_key: str | None = attrs.field(default=None, repr=False)
    """None: any bearer token is accepted. Otherwise only this one, on the API and
    on the ``/_emulator/*`` control routes. A missing or malformed
    ``Authorization`` header is always 401."""
    limits: Limits = attrs.field(factory=Limits)
    speed: float = attrs.field(default=1.0, validator=_positive)
    """Acceleration: every modelled latency is divided by it (100 turns 30 s into 0.3 s)."""
    fixed_latency: float | None = attrs.field(default=None, validator=_non_negative)
    """Total seconds from create to terminal state for every job (a fifth queued,
    the rest dreaming), no jitter, not scaled by ``speed``."""
    jitter: float = attrs.field(default=0.2, validator=_rate)
    """Each modelled latency is multiplied by a uniform factor in [1 - jitter, 1 + jitter]."""
    failure_rate: float = attrs.field(default=0.0, validator=_rate)
    """Fraction of jobs that end failed with "Job failed"."""
    failure_rates: Mapping[str, float] = attrs.field(factory=dict, converter=failure_rates)
    """Per documented failure reason (keys of ``FAILURE_REASONS``: ``frame_moderation``,
    ``dispatch``, ...), the fraction of jobs that end failed with it. A prompt
    containing ``fail:KEY`` fails with that reason every time."""
    callback_duplicates: float = attrs.field(default=0.0, validator=_rate)
    """Fraction of callback deliveries sent twice (the docs: a receiver "is expected
    to be called multiple times for a status")."""
    callback_reorder: float = attrs.field(default=0.0, validator=_rate)
    """Fraction of generations whose callbacks arrive in reverse order (the final
    state first, then a stale ``dreaming``)."""
    callback_delay: float = attrs.field(default=0.0, validator=_non_negative)
    """Each callback is held back by a random 0 to this many seconds (late delivery:
    the payload is the state when it changed, not when it arrives)."""
    blacklist: tuple[str, ...] = attrs.field(default=DEFAULT_BLACKLIST, converter=_words)
    seed: int | None = None
    """Seeds every random choice (latency jitter, failures, faults, ids)."""
    credit_balance_cents: float = 500_000.0
    """Starting balance ($5,000, the Build tier's monthly cap). A create it cannot
    cover is refused with 402."""
    monthly_usage_cap_cents: float | None = attrs.field(default=None, validator=_non_negative)
    """Refuse (402) a create that would take this calendar month's charges, refunds
    deducted, past this many cents (the Build tier's cap is 500000). None: no cap."""
    prices: PriceTable = attrs.field(factory=PriceTable)
    image_scale: float = attrs.field(default=0.125, validator=_positive)
    """Images are the docs' reframe size for the aspect ratio times this (1/8: 16:9 is 256x144)."""
    video_padding_bytes: int = attrs.field(default=0, validator=_non_negative)
    """Extra bytes appended to every video (in an MP4 ``free`` box) to emulate big files."""
    asset_url_ttl: float | None = attrs.field(default=None, validator=_non_negative)
    """Asset URLs expire this many seconds after they are signed (None: never). A
    generation's URLs are the same on every read for the first half of that
    time; a read after it signs fresh ones."""
    faults: Faults = attrs.field(factory=Faults)
    derived_new_id: bool = True
    """Upscale and audio create a new generation (True) or restart the source
    generation under its own id (False); the real behaviour is unverified."""
    default_video_model: str = "ray-2"
    """Model for video bodies that name none (the legacy ``POST /generations``)."""
    callback_attempts: int = 4
    """One POST plus 3 retries, as documented."""
    callback_retry_delay: float = 0.1
    callback_timeout: float = 5.0
    public_url: str | None = None
    """Origin written into asset URLs (default ``http://HOST:PORT``)."""
    fetch_inputs: bool = False
    """Read every input URL at create over HTTP, as the real service does, and
    fail the generation with "Failed to read user input frames" when one cannot
    be read. Off: only the emulator's own upload URLs are checked (and a URL
    containing ``unreachable`` fails), so tests may use made-up URLs."""
    state_path: Path | None = attrs.field(default=None, converter=_optional_path)
    """A SQLite file that keeps generations, deletions, credits and the asset
    signing key across restarts (None: memory only). Started again on the same
    file, the emulator serves the same generations, each going on along its
    timeline; with ``port=0`` it tries the port it last served on first, so
    asset URLs handed out before keep working."""
