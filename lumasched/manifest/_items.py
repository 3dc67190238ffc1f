"""Building one manifest item from its record: its kind, references to other
items turned into placeholder ids, local file paths turned into file URLs, a
suggestion for a mistyped field; and the dependency cycles among items."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lumasched.api._inputs import local_url
from lumasched.api._models import KINDS, REF_PREFIX, REQUEST_CLASSES
from lumasched.manifest._formats import Record

if TYPE_CHECKING:
    from lumasched.manifest import ManifestProblem

__all__ = [
    "VIDEO_RESULT_KINDS",
    "VIDEO_SOURCE_KINDS",
    "Edge",
    "cycles",
    "kind_of",
    "locate",
    "ref_placeholder",
    "suggestion",
    "take_paths",
    "take_refs",
]

_SOURCE_KINDS = frozenset({"upscale", "audio"})
# Kinds whose result is a video: the only generations a keyframe, an upscale or
# an audio request can build on.
VIDEO_RESULT_KINDS = frozenset({"video", "reframe_video", "modify_video", "upscale", "audio"})
VIDEO_SOURCE_KINDS = frozenset({"reframe_video", "modify_video"})
"""Kinds whose ``media`` is a video (every other local input is an image)."""


def ref_placeholder(item_id: str) -> str:
    """The stand-in generation id used for a reference to item ``item_id``: the
    scheduler's own placeholder (``job:<item_id>``, ``Scheduler.ref``), so an item's
    request can go to the scheduler as it is; ``ManifestItem.resolve`` swaps it."""
    return REF_PREFIX + item_id


@attrs.define
class Edge:
    """Item ``item`` depends on ``dep`` through ``field`` (at ``line``)."""

    item: str
    line: int
    field: str
    dep: str


def kind_of(
    data: dict[str, Any],
    problems: list[ManifestProblem],
    problem: Callable[[str, str], ManifestProblem],
) -> str | None:
    kind = data.pop("type", None)
    if kind is not None:
        if kind in KINDS:
            return str(kind)
        problems.append(
            problem("type", f"unknown type {kind!r}: expected one of {', '.join(KINDS)}")
        )
        return None
    model = data.get("model")
    if isinstance(model, str) and model.startswith("photon"):
        return "image"
    if isinstance(model, str) and model.startswith("ray"):
        return "video"
    what = f"from model {model!r}" if model is not None else "without a model"
    problems.append(
        problem(
            "type",
            f"missing, and cannot be inferred {what} (photon-* → image, ray-* → video); "
            f"give one of {', '.join(KINDS)}",
        )
    )
    return None


def take_refs(
    kind: str,
    data: dict[str, Any],
    refs: list[tuple[str, str]],
    renamed: dict[str, str],
    problems: list[ManifestProblem],
    problem: Callable[[str, str], ManifestProblem],
) -> None:
    """Turn item references into placeholder generation ids, in place."""
    keyframes = data.get("keyframes")
    if isinstance(keyframes, dict):
        keyframes = data["keyframes"] = dict(keyframes)
        for frame in ("frame0", "frame1"):
            keyframe = keyframes.get(frame)
            if not isinstance(keyframe, dict) or "ref" not in keyframe:
                continue
            field = f"keyframes.{frame}.ref"
            keyframe = dict(keyframe)
            ref = keyframe.pop("ref")
            if keyframe.get("type", "generation") != "generation":
                problems.append(
                    problem(field, "only a keyframe of type 'generation' can name an item")
                )
                continue
            if "id" in keyframe:
                problems.append(problem(field, "give either id (a generation) or ref (an item)"))
                continue
            if not isinstance(ref, str) or not ref:
                problems.append(problem(field, "must be an item id (a string)"))
                continue
            keyframe["type"] = "generation"
            keyframe["id"] = ref_placeholder(ref)
            keyframes[frame] = keyframe
            renamed[f"keyframes.{frame}.id"] = field
            refs.append((field, ref))
    if kind not in _SOURCE_KINDS:
        return
    if "source" not in data:
        if "generation_id" not in data:
            problems.append(
                problem(
                    "source",
                    f"required: the id of the manifest item to {kind} "
                    "(or generation_id for an existing generation)",
                )
            )
            renamed["generation_id"] = "source"
        return
    source = data.pop("source")
    if "generation_id" in data:
        problems.append(problem("source", "give either source (an item) or generation_id"))
        return
    if not isinstance(source, str) or not source:
        problems.append(problem("source", "must be an item id (a string)"))
        data["generation_id"] = ref_placeholder("")
        renamed["generation_id"] = "source"
        return
    data["generation_id"] = ref_placeholder(source)
    renamed["generation_id"] = "source"
    refs.append(("source", source))


def take_paths(
    value: Any,
    where: str,
    base: Path,
    files: list[tuple[str, str, str]],
    problems: list[ManifestProblem],
    problem: Callable[[str, str], ManifestProblem],
) -> Any:
    """``{"path": P, ...}`` -> ``{"url": "file://...", ...}`` (``P`` relative to
    ``base``), recursively; in a list of URLs (character images), ``{"path": P}``
    becomes the URL itself. ``files`` gets (field, URL, where) of each."""
    if isinstance(value, list):
        out = []
        for i, element in enumerate(value):
            here = f"{where}[{i}]"
            if isinstance(element, dict) and set(element) == {"path"}:
                url = _file_url(element["path"], f"{here}.path", base, problems, problem)
                files.append((f"{here}.path", url, here))
                out.append(url)
            else:
                out.append(take_paths(element, here, base, files, problems, problem))
        return out
    if not isinstance(value, dict):
        return value
    value = {
        key: take_paths(child, f"{where}.{key}", base, files, problems, problem)
        for key, child in value.items()
    }
    if "path" not in value:
        return value
    field = f"{where}.path"
    raw = value.pop("path")
    if where in ("keyframes.frame0", "keyframes.frame1"):
        value.setdefault("type", "image")
    if "url" in value:
        problems.append(problem(field, "give either url or path (a local file)"))
        return value
    if value.get("type") == "generation":
        problems.append(problem(field, "a keyframe of type 'generation' names an id, not a file"))
        return value
    value["url"] = _file_url(raw, field, base, problems, problem)
    files.append((field, value["url"], where))
    return value


def _file_url(
    raw: Any,
    field: str,
    base: Path,
    problems: list[ManifestProblem],
    problem: Callable[[str, str], ManifestProblem],
) -> str:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(problem(field, "must be a file path (a non-empty string)"))
        return "-"  # not a file URL: checked no further
    return local_url(base / Path(raw).expanduser())


def suggestion(kind: str, path: str) -> str:
    """``" (did you mean 'prompt'?)"`` for a typo'd top-level field, else ``""``."""
    if "." in path or "[" in path:
        return ""
    cls = REQUEST_CLASSES.get(kind)
    if cls is None:
        return ""
    names = [a.name for a in attrs.fields(cls)]
    if kind in _SOURCE_KINDS:
        names.append("source")
    close = difflib.get_close_matches(path, names, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cycles(graph: dict[str, list[Edge]]) -> Iterator[tuple[Edge, list[str]]]:
    """Each cycle once, as (the edge closing it, the ids around it)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if root in state:
            continue
        path: list[str] = [root]
        state[root] = 1
        stack: list[Iterator[Edge]] = [iter(graph.get(root, []))]
        while stack:
            edge = next(stack[-1], None)
            if edge is None:
                stack.pop()
                state[path.pop()] = 2
                continue
            seen = state.get(edge.dep)
            if seen == 1:
                start = path.index(edge.dep)
                yield edge, [*path[start:], edge.dep]
            elif seen is None:
                state[edge.dep] = 1
                path.append(edge.dep)
                stack.append(iter(graph.get(edge.dep, [])))


def locate(record: Record, path: str) -> int:
    if record.locate is None or not path:
        return record.line
    return record.locate(path)
