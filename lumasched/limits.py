"""Account limits per model family, and the ``Limiter`` seam that enforces them.

An account's limits are per model *family*: ``video`` (ray models, and reframe
video, modify video, upscale, audio) and ``image`` (photon models, and reframe
image). Each family has a concurrency cap (generations in flight, held from the
create until the generation is terminal) and a create-request rate
(``requests`` per ``per_seconds``, enforced as a sliding window: in *any* window
of ``per_seconds`` at most ``requests`` creates leave).
"""

from __future__ import annotations

import enum
import tomllib
from pathlib import Path
from typing import Any, Protocol, Self

import attrs

from lumasched.errors import ConfigurationError

__all__ = [
    "BUILD_TIER",
    "Family",
    "FamilyLimits",
    "FamilyStatistics",
    "Limiter",
    "Limits",
    "OrphanLease",
    "family_of",
]


class Family(enum.StrEnum):
    VIDEO = "video"
    IMAGE = "image"


_IMAGE_KINDS = frozenset({"image", "reframe_image"})
_VIDEO_KINDS = frozenset({"video", "reframe_video", "modify_video", "upscale", "audio"})


def family_of(kind: str, model: str | None = None) -> Family:
    """The family a request counts against, from its kind (and model, for legacy kinds)."""
    if kind in _IMAGE_KINDS:
        return Family.IMAGE
    if kind in _VIDEO_KINDS:
        return Family.VIDEO
    if model is not None and model.startswith("photon"):
        return Family.IMAGE
    if model is not None and model.startswith("ray"):
        return Family.VIDEO
    raise ValueError(f"unknown request kind {kind!r}")


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
        default = cls()
        problems: list[str] = []
        families: dict[str, FamilyLimits] = {}
        for key in data:
            if key not in ("video", "image"):
                problems.append(f"{source}: [{key}]: unknown family (expected video or image)")
        for family in Family:
            section = data.get(family.value, {})
            base = default[family]
            if not isinstance(section, dict):
                problems.append(f"{source}: {family.value}: must be a table")
                families[family.value] = base
                continue
            values: dict[str, Any] = attrs.asdict(base)
            for field, value in section.items():
                where = f"{source}: {family.value}.{field}"
                if field not in values:
                    problems.append(
                        f"{where}: unknown field (expected concurrency, requests, per_seconds)"
                    )
                    continue
                want_int = field != "per_seconds"
                ok_type = isinstance(value, int) if want_int else isinstance(value, int | float)
                if isinstance(value, bool) or not ok_type or value <= 0:
                    kind = "a positive integer" if want_int else "a positive number"
                    problems.append(f"{where}: must be {kind}, got {value!r}")
                    continue
                values[field] = float(value) if field == "per_seconds" else value
            families[family.value] = FamilyLimits(**values)
        if problems:
            raise ConfigurationError("invalid limits:\n" + "\n".join(problems))
        return cls(video=families["video"], image=families["image"])


BUILD_TIER = Limits()


@attrs.frozen
class FamilyStatistics:
    """A snapshot of one family's limiter state."""

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

    async def acquire(self, family: Family, lease_id: str) -> None:
        """Wait (FIFO) until one concurrency slot and one create-rate token are both
        free, and take them together. Idempotent on ``lease_id``. If cancelled while
        waiting, nothing is taken."""
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
