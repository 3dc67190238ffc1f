"""What every limiter shares: the account's limits, the ``Limiter`` protocol and
its statistics, and the adaptive arithmetic (back-off, recovery, scaling) both
the in-process and the Redis limiter apply. Private: ``lumasched.limits``
exports the public part."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Protocol, Self

import attrs

from lumasched.api._converter import config_from_dict, register_config
from lumasched.api._taxonomy import Family
from lumasched.errors import ConfigurationError


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class FamilyLimits:
    concurrency: int = attrs.field(validator=_positive)
    requests: int = attrs.field(validator=_positive)
    per_seconds: float = attrs.field(validator=_positive)


@attrs.frozen
class Limits:
    """Limits for both families. ``Limits()`` is the Build tier."""

    video: FamilyLimits = FamilyLimits(concurrency=10, requests=20, per_seconds=60.0)
    image: FamilyLimits = FamilyLimits(concurrency=40, requests=80, per_seconds=60.0)

    def __getitem__(self, family: Family) -> FamilyLimits:
        return self.video if family is Family.VIDEO else self.image

    @classmethod
    def tier(cls, name: str) -> Self:
        """A named tier. Only ``build`` is published; others come from a TOML file."""
        if name.lower() == "build":
            return cls()
        raise ConfigurationError(
            f"unknown tier {name!r}: the only published tier is 'build'; "
            "describe any other with a limits file (--limits FILE)"
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Self:
        """Read a limits file. Families or fields left out keep their Build-tier values.

        ::

            [video]
            concurrency = 10
            requests = 20
            per_seconds = 60
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read limits file: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "limits") -> Self:
        """Limits from a parsed limits file: through the wire's converter, every
        problem at once (``limits.toml: video.concurrency: must be a positive
        integer, got 0``)."""
        default = cls()
        merged: dict[str, Any] = {family.value: attrs.asdict(default[family]) for family in Family}
        for key, section in data.items():
            base = merged.get(key)
            merged[key] = {**base, **section} if base and isinstance(section, dict) else section
        return config_from_dict(merged, cls, source=source, what="limits")


def _table(value: Any) -> Any:
    if not isinstance(value, dict):
        raise TypeError("must be a table")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return float(value)


register_config(FamilyLimits, concurrency=_count, requests=_count, per_seconds=_seconds)
register_config(Limits, video=_table, image=_table)


BUILD_TIER = Limits()


@attrs.frozen
class FamilyStatistics:
    """A snapshot of one family's limiter state.

    ``held`` counts slots in use (orphans included); ``window_used`` counts
    grants inside the window the limiter enforces (``per_seconds`` plus the
    safety margin). ``effective_*`` are the limits after 429 back-off.
    ``hold_remaining`` is the pause a shared limiter imposes after it lost its
    state or saw an outage, so that earlier holders can re-register.
    """

    family: Family
    concurrency_limit: int
    effective_concurrency: int
    held: int
    waiting: int
    window_used: int
    window_limit: int
    effective_window_limit: int
    penalty_remaining: float
    rate_limited: int
    orphaned: int = 0
    granted: int = 0
    hold_remaining: float = 0.0


@attrs.frozen
class OrphanLease:
    """A lease whose holder died after its create was accepted: adopt, poll, release."""

    family: Family
    lease_id: str
    generation_id: str


class Limiter(Protocol):
    """Grants create permissions within an account's limits.

    A *lease* is one create attempt and, if it succeeds, its generation until
    that is terminal. Implementations are async context managers (a shared one
    may run heartbeats); every method is safe to call from many tasks.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def acquire(self, family: Family, lease_id: str, *, rate: bool = True) -> None:
        """Wait (FIFO) until one concurrency slot and one create-rate token are both
        free, and take them together. Idempotent on ``lease_id``. If cancelled while
        waiting, nothing is taken.

        With ``rate=False`` take only the slot, for a generation created earlier
        (e.g. by a previous run) that is to be followed to its end: no create
        will be sent, so no rate token is spent and no 429 pause applies."""
        ...

    async def release(self, family: Family, lease_id: str) -> None:
        """Give the slot back: the generation is terminal, or the create surely
        did not happen. The rate token stays spent (the server counted the
        arrival). Idempotent; unknown leases are ignored."""
        ...

    async def mark_submitted(self, family: Family, lease_id: str, generation_id: str) -> None:
        """The create was accepted: the lease now stands for a generation and
        must outlive its holder until someone polls that generation to its end."""
        ...

    async def note_rate_limited(self, family: Family, retry_after: float | None) -> None:
        """A 429 came back: hold new grants for ``retry_after`` seconds (or a
        backoff of its own) and cut the family's effective concurrency and rate;
        they recover slowly as creates succeed."""
        ...

    async def note_success(self, family: Family) -> None:
        """A create succeeded: lets a backed-off family recover."""
        ...

    async def adopt_orphans(self, family: Family) -> list[OrphanLease]:
        """Take over leases whose holder died after submitting their generation.
        The caller polls each to its end and then releases it."""
        ...

    async def statistics(self) -> dict[Family, FamilyStatistics]:
        """A snapshot per family."""
        ...


# --- shared semantics -------------------------------------------------------------

DECREASE_FACTOR = 0.5
"""A 429 multiplies a family's effective concurrency and rate by this."""
DEFAULT_MIN_FACTOR = 0.1
"""Back-off never goes below this fraction of the configured limits (nor below 1)."""
MAX_WINDOW_MARGIN = 2.0


def default_window_margin(per_seconds: float) -> float:
    """The safety margin added to the rate window: 3% of it, between 20 ms and 2 s.

    The server counts *arrivals*; two grants exactly one window apart can arrive
    closer together if the first was delayed more on its way. Widening the
    window by more than that jitter keeps every true window within the limit.
    (The in-process limiter needs it only for creates not yet answered: an
    answered one counts one window from its answer.)
    """
    return min(MAX_WINDOW_MARGIN, max(0.02, per_seconds * 0.03))


def recovery_step(limits: FamilyLimits) -> float:
    """Additive recovery per successful create: back from half the limits in
    ``requests`` successes (about two windows at the reduced rate)."""
    return 1.0 / (2 * limits.requests)


def backoff_pause(limits: FamilyLimits, consecutive: int) -> float:
    """Our own pause after a 429 without ``Retry-After``: a twentieth of the
    window, doubling per consecutive 429, at most one window."""
    base = max(0.05, limits.per_seconds / 20)
    return float(min(limits.per_seconds, base * 2 ** max(0, consecutive - 1)))


def max_penalty(limits: FamilyLimits) -> float:
    """A ``Retry-After`` longer than this is treated as this (a sanity cap)."""
    return max(120.0, 2 * limits.per_seconds)


def scaled(limit: int, factor: float) -> int:
    return max(1, math.floor(limit * factor + 1e-9))
