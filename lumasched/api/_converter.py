"""The one cattrs converter that owns the wire format.

Requests are strict (unknown keys and wrong types are problems, reported all at
once with field paths); responses are tolerant (unknown keys are kept in
``extra``, unknown states stay plain strings). Bodies serialise exactly as the
official SDK sends them: compact JSON, required arguments first, then the rest
in alphabetical order, unset fields absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override
from cattrs.preconf.json import make_converter

from lumasched.api._models import (
    REQUEST_CLASSES,
    Assets,
    CharacterIdentity,
    CharacterRef,
    Concept,
    CreateRequest,
    Credits,
    Generation,
    GenerationKeyframe,
    GenerationPage,
    GenerationState,
    ImageKeyframe,
    ImageRef,
    Keyframe,
    Keyframes,
    Media,
    Ping,
)
from lumasched.errors import ConfigurationError, Problem, ValidationError

__all__ = [
    "config_from_dict",
    "dumps_body",
    "register_config",
    "request_body",
    "request_from_dict",
    "request_to_dict",
    "structure_credits",
    "structure_generation",
    "structure_page",
    "structure_ping",
    "structure_strings",
    "unstructure_generation",
]

T = TypeVar("T")

_converter = make_converter()


# -- strict primitives (requests): no silent str(5) or bool("no") -------------------------


def _str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _number(value: Any, _: type) -> float:
    # Kept as given (int stays int) so the body bytes match what the SDK would send.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return value


_converter.register_structure_hook(str, _str)
_converter.register_structure_hook(bool, _bool)
_converter.register_structure_hook(int, _int)
_converter.register_structure_hook(float, _number)

_STRICT_PARTS = (Media, ImageRef, CharacterIdentity, CharacterRef, Concept, Keyframes)


class _Located(ValueError):
    """A problem raised from a hook that knows its own relative path."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(message)


_KEYFRAME_TYPES: dict[str, type[ImageKeyframe] | type[GenerationKeyframe]] = {
    "image": ImageKeyframe,
    "generation": GenerationKeyframe,
}


def _structure_keyframe(value: Any, _: Any) -> Keyframe:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    rest = dict(value)
    kind = rest.pop("type", None)
    cls = _KEYFRAME_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _Located(("type",), "must be 'image' or 'generation'")
    return _converter.structure(rest, cls)


def _unstructure_keyframe(frame: Keyframe) -> dict[str, Any]:
    if isinstance(frame, ImageKeyframe):
        return {"type": "image", "url": frame.url}
    return {"type": "generation", "id": frame.id}


_converter.register_structure_hook(Keyframe, _structure_keyframe)
_converter.register_unstructure_hook(ImageKeyframe, _unstructure_keyframe)
_converter.register_unstructure_hook(GenerationKeyframe, _unstructure_keyframe)


def _strict_fn(cls: type[T]) -> Any:
    """A structure function that forbids unknown keys (and accepts the class's constant
    ``generation_type``, which the body carries but the model does not)."""
    inner = make_dict_structure_fn(cls, _converter, _cattrs_forbid_extra_keys=True)
    constant: str | None = getattr(cls, "_generation_type", None)

    def structure(value: Any, _: type) -> T:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        data = dict(value)
        located: list[Exception] = []
        if constant is not None and data.get("generation_type", constant) != constant:
            located.append(_Located(("generation_type",), f"must be {constant!r}"))
        if constant is not None:
            data.pop("generation_type", None)
        try:
            result: T = inner(data, cls)
        except ClassValidationError as exc:
            located = [*exc.exceptions, *located]
        if located:
            raise ClassValidationError(f"While structuring {cls.__name__}", located, cls)
        return result

    return structure


for _cls in (*_STRICT_PARTS, ImageKeyframe, GenerationKeyframe, *REQUEST_CLASSES.values()):
    _converter.register_structure_hook(_cls, _strict_fn(_cls))


def _drop_none(value: Any) -> Any:
    """Unset fields are absent on the wire, never ``null``."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# -- error paths -----------------------------------------------------------------------


def _join(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _leaf_message(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        text = str(exc)
        if text.startswith(("could not convert", "invalid literal")):
            return "expected a number"
        return text
    return f"invalid value ({type(exc).__name__})"


def problems_from_cattrs(
    exc: BaseException, path: tuple[str | int, ...] = (), *, expected: bool = False
) -> list[Problem]:
    """Flatten a cattrs structuring error into ``Problem(path, message)`` lines;
    ``expected``: an unknown field's line names the fields there are."""
    if isinstance(exc, _Located):
        return [Problem(_join(path + exc.path), exc.message)]
    if isinstance(exc, ForbiddenExtraKeysError):
        known = ", ".join(a.name for a in attrs.fields(exc.cl)) if expected else ""
        what = f"unknown field (expected {known})" if known else "unknown field"
        return [Problem(_join((*path, key)), what) for key in sorted(exc.extra_fields)]
    if isinstance(exc, ClassValidationError | IterableValidationError):
        problems: list[Problem] = []
        inner: list[tuple[BaseException, Any]] = list(exc.group_exceptions()[0])
        for sub, note in inner:
            if note is None:
                problems.extend(problems_from_cattrs(sub, path, expected=expected))
                continue
            step: str | int = note.index if isinstance(note, IterableValidationNote) else note.name
            if isinstance(sub, KeyError):
                problems.append(Problem(_join((*path, step)), "required field missing"))
            else:
                problems.extend(problems_from_cattrs(sub, (*path, step), expected=expected))
        for sub in exc.group_exceptions()[1]:
            problems.extend(problems_from_cattrs(sub, path, expected=expected))
        return problems
    return [Problem(_join(path), _leaf_message(exc))]


# -- settings files (limits, prices) ---------------------------------------------------


def register_config(cls: type[Any], **checks: Callable[[Any], Any]) -> None:
    """Structure the attrs class ``cls`` strictly (an unknown key is a problem), each
    field named in ``checks`` through its check first: it returns the value to
    structure as the field's type, or raises ``ValueError``/``TypeError`` saying
    what is wrong (``must be a positive integer, got 0``)."""

    def checked(check: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
        return lambda value, type_: _converter.structure(check(value), type_)

    overrides: dict[str, Any] = {
        name: override(struct_hook=checked(check)) for name, check in checks.items()
    }
    hook = make_dict_structure_fn(cls, _converter, _cattrs_forbid_extra_keys=True, **overrides)
    _converter.register_structure_hook(cls, hook)


def config_from_dict(data: Any, cls: type[T], *, source: str, what: str) -> T:
    """A settings file's parsed ``data`` as ``cls`` (see ``register_config``); every
    problem at once, under ``invalid WHAT:``, one ``SOURCE: field.path: problem``
    line each."""
    try:
        return _converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, TypeError, ValueError) as exc:
        lines = [
            f"{source}: {problem.path}: {problem.message}"
            if problem.path
            else f"{source}: {problem.message}"
            for problem in problems_from_cattrs(exc, expected=True)
        ]
        raise ConfigurationError(f"invalid {what}:\n" + "\n".join(lines)) from None


# -- requests --------------------------------------------------------------------------


def request_from_dict(kind: str, data: Mapping[str, Any]) -> CreateRequest:
    """Build and validate a request of ``kind`` from plain data (a manifest row, a journal).

    Unknown fields are rejected, and every problem is reported at once:

    >>> request_from_dict("video", {"promt": "a cat"})
    Traceback (most recent call last):
    ...
    lumasched.errors.ValidationError: invalid request:
      promt: unknown field
      prompt: Prompt is required
    """
    from lumasched.api._validation import problems_of

    cls = REQUEST_CLASSES.get(kind)
    if cls is None:
        raise ValidationError([Problem("kind", f"Unknown request type {kind!r}")])
    if not isinstance(data, Mapping):
        raise ValidationError([Problem("", f"expected an object, got {type(data).__name__}")])
    try:
        request: CreateRequest = _converter.structure(dict(data), cls)
    except (ClassValidationError, ForbiddenExtraKeysError, TypeError, ValueError) as exc:
        problems = problems_from_cattrs(exc)
        # Rule checks on what did parse, so the user sees everything in one go.
        lenient = _lenient(cls, data)
        if lenient is not None:
            reported = {p.path for p in problems}
            problems += [p for p in problems_of(lenient) if p.path not in reported]
        raise ValidationError(problems) from None
    problems = problems_of(request)
    if problems:
        raise ValidationError(problems)
    return request


def _lenient(cls: type[CreateRequest], data: Mapping[str, Any]) -> CreateRequest | None:
    """The request built from only the fields that parse alone, or None if that fails."""
    fields = {a.name for a in attrs.fields(cls)}
    good: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            continue
        try:
            _converter.structure({**good, key: value}, cls)
        except (ClassValidationError, ForbiddenExtraKeysError, TypeError, ValueError) as exc:
            if any(p.path.split(".")[0].split("[")[0] == key for p in problems_from_cattrs(exc)):
                continue
        good[key] = value
    try:
        return _converter.structure(good, cls)
    except (ClassValidationError, ForbiddenExtraKeysError, TypeError, ValueError):
        return None


def request_to_dict(request: CreateRequest) -> dict[str, Any]:
    """Plain data that ``request_from_dict(request.kind, ...)`` reads back to an equal request."""
    data: dict[str, Any] = _drop_none(_converter.unstructure(request))
    return data


def request_body(request: CreateRequest) -> dict[str, Any]:
    """The JSON body for ``request``, keys in the official SDK's order."""
    data = request_to_dict(request)
    data.pop("generation_id", None)
    constant = type(request)._generation_type
    if constant is not None:
        data["generation_type"] = constant
    required = type(request)._required
    first = sorted(k for k in data if k in required)
    rest = sorted(k for k in data if k not in required)
    return {k: data[k] for k in (*first, *rest)}


def dumps_body(request: CreateRequest) -> bytes:
    """The exact bytes the official SDK sends: compact separators, UTF-8, no NaN."""
    return json.dumps(
        request_body(request), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# -- responses -------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _format_datetime(value: datetime) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_ASSET_KEYS = ("video", "image", "progress_video")
_GENERATION_KEYS = (
    "id",
    "generation_type",
    "state",
    "failure_reason",
    "created_at",
    "assets",
    "model",
    "request",
)


def _state(value: Any) -> str:
    if not isinstance(value, str):
        return GenerationState.QUEUED if value is None else str(value)
    try:
        return GenerationState(value)
    except ValueError:
        return value


def structure_generation(data: Any) -> Generation:
    """A ``Generation`` from server JSON. Raises ``ValueError`` when there is no id."""
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("a generation needs a non-empty string 'id'")
    raw_assets = data.get("assets")
    assets = None
    if isinstance(raw_assets, Mapping):
        assets = Assets(
            video=_opt_str(raw_assets.get("video")),
            image=_opt_str(raw_assets.get("image")),
            progress_video=_opt_str(raw_assets.get("progress_video")),
            extra={k: v for k, v in raw_assets.items() if k not in _ASSET_KEYS},
        )
    request = data.get("request")
    return Generation(
        id=data["id"],
        state=_state(data.get("state")),
        failure_reason=_opt_str(data.get("failure_reason")),
        created_at=_parse_datetime(data.get("created_at")),
        generation_type=_opt_str(data.get("generation_type")),
        model=_opt_str(data.get("model")),
        assets=assets,
        request=dict(request) if isinstance(request, Mapping) else None,
        extra={k: v for k, v in data.items() if k not in _GENERATION_KEYS},
    )


def unstructure_generation(generation: Generation) -> dict[str, Any]:
    assets = None
    if generation.assets is not None:
        a = generation.assets
        assets = {"video": a.video, "image": a.image, "progress_video": a.progress_video, **a.extra}
    created = generation.created_at
    return {
        "id": generation.id,
        "generation_type": generation.generation_type,
        "state": str(generation.state),
        "failure_reason": generation.failure_reason,
        "created_at": None if created is None else _format_datetime(created),
        "assets": assets,
        "model": generation.model,
        "request": generation.request,
        **generation.extra,
    }


def structure_page(data: Any) -> GenerationPage:
    if not isinstance(data, Mapping) or not isinstance(data.get("generations"), list):
        raise ValueError("a generation list needs a 'generations' array")
    generations = tuple(structure_generation(g) for g in data["generations"])

    def opt_int(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    count = opt_int("count")
    return GenerationPage(
        generations=generations,
        count=len(generations) if count is None else count,
        has_more=data.get("has_more") is True,
        limit=opt_int("limit"),
        offset=opt_int("offset"),
    )


def structure_strings(data: Any) -> list[str]:
    """A list of names (concepts, camera motions); ``{"key": ...}`` objects are accepted too."""
    if not isinstance(data, list):
        raise ValueError("expected a JSON array")
    out: list[str] = []
    for item in data:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("key"), str):
            out.append(item["key"])
    return out


def structure_credits(data: Any) -> Credits:
    value = data.get("credit_balance") if isinstance(data, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("credits need a numeric 'credit_balance'")
    return Credits(float(value))


def structure_ping(data: Any) -> Ping:
    return Ping(_opt_str(data.get("message")) if isinstance(data, Mapping) else None)
