"""Manifests: JSONL, CSV or YAML files of generation requests, validated as a whole.

A manifest is checked completely before anything is sent: :meth:`Manifest.check`
reads the file once and raises :class:`ManifestError` listing *every* problem,
each as ``FILE:LINE: field: message``. It keeps only what cross-item checks need
(each item's id, line and kind, and the references between items), so a manifest
of 100,000 items is checked in flat memory. Iterating the manifest afterwards
re-reads the file lazily and yields one :class:`ManifestItem` at a time.

Each item is an object with an optional ``id`` (unique; letters, digits, ``.``,
``_``, ``-``, not starting with ``.``; default ``line-N``), an optional ``type``
(inferred from ``model``: ``photon*`` → image, ``ray*`` → video) and the API's own
request fields. An item may name another item instead of a generation id: a
keyframe ``{"type": "generation", "ref": "<item id>"}``, or ``"source": "<item
id>"`` for upscale and audio. ::

    >>> manifest = Manifest("batch.jsonl")
    >>> summary = manifest.check()          # raises ManifestError
    >>> for item in manifest.submission_order():
    ...     print(item.id, item.kind, item.deps)
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml

from lumasched.api import CreateRequest, replace_generation_refs, request_from_dict
from lumasched.api._models import KINDS, REFRAME_INT_FIELDS, REQUEST_CLASSES
from lumasched.errors import Problem, ValidationError
from lumasched.limits import Family, family_of

__all__ = [
    "KINDS",
    "Manifest",
    "ManifestError",
    "ManifestItem",
    "ManifestProblem",
    "ManifestSummary",
    "load_manifest",
    "ref_placeholder",
]

_SOURCE_KINDS = frozenset({"upscale", "audio"})
# Kinds whose result is a video: the only generations a keyframe, an upscale or
# an audio request can build on.
_VIDEO_RESULT_KINDS = frozenset({"video", "reframe_video", "modify_video", "upscale", "audio"})

_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")
_MAX_ID_LENGTH = 128
_REF_NAMESPACE = uuid.UUID("5d1f6a86-2f4e-4d55-9b0c-4a7de0b7f3c1")

_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".yaml": "yaml",
    ".yml": "yaml",
}


def ref_placeholder(item_id: str) -> str:
    """The stand-in generation id used for a reference to item ``item_id``.

    It is UUID-shaped so request validation accepts it; the runner swaps it for
    the real generation id (or the scheduler's own placeholder) at submission.
    """
    return str(uuid.uuid5(_REF_NAMESPACE, item_id))


class ManifestProblem(Problem):
    """A problem at ``file:line`` in field ``path`` (empty when the item as a whole is wrong)."""

    __slots__ = ("file", "line")

    def __init__(self, file: str, line: int, path: str, message: str) -> None:
        super().__init__(path, message)
        self.file = file
        self.line = line

    def __repr__(self) -> str:
        return (
            f"ManifestProblem(file={self.file!r}, line={self.line}, "
            f"path={self.path!r}, message={self.message!r})"
        )

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {super().__str__()}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ManifestProblem):
            return NotImplemented
        return (self.file, self.line, self.path, self.message) == (
            other.file,
            other.line,
            other.path,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.file, self.line, self.path, self.message))


class ManifestError(ValidationError):
    """The manifest is invalid; ``problems`` lists every problem, in file order."""

    problems: list[ManifestProblem]  # type: ignore[assignment]

    def __init__(self, problems: list[ManifestProblem]) -> None:
        super().__init__(list(problems))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"invalid manifest ({count} problem{'s' if count != 1 else ''})"
        return head + ":\n" + "\n".join(f"  {p}" for p in self.problems)


@attrs.frozen
class ManifestItem:
    """One validated item.

    ``request`` holds :func:`ref_placeholder` ids where the item names other
    items; ``deps`` lists those item ids. Use :meth:`resolve` to swap them.
    """

    id: str
    kind: str
    line: int
    request: CreateRequest
    deps: tuple[str, ...] = ()

    @property
    def family(self) -> Family:
        return family_of(self.kind, self.request.model)

    def resolve(self, generation_id_of: Callable[[str], str]) -> CreateRequest:
        """The request with each item reference replaced by ``generation_id_of(item_id)``."""
        if not self.deps:
            return self.request
        by_placeholder = {ref_placeholder(dep): dep for dep in self.deps}

        def swap(generation_id: str) -> str:
            dep = by_placeholder.get(generation_id)
            return generation_id if dep is None else generation_id_of(dep)

        return replace_generation_refs(self.request, swap)


@attrs.frozen
class ManifestSummary:
    """What :meth:`Manifest.check` learnt: counts per (family, kind, model)."""

    path: Path
    format: str
    count: int
    groups: dict[tuple[Family, str, str | None], int]
    dependent: int


@attrs.frozen
class _Record:
    line: int
    data: dict[str, Any] | None
    problems: list[tuple[str, str]]
    locate: Callable[[str], int] | None = None


@attrs.frozen
class _Built:
    item: ManifestItem | None
    problems: list[ManifestProblem]
    id: str | None = None
    kind: str | None = None
    refs: list[tuple[str, str]] = attrs.Factory(list)


@attrs.define
class _Edge:
    item: str
    line: int
    field: str
    dep: str


class Manifest:
    """A manifest file. ``format`` is taken from the suffix unless given
    (``jsonl``/``ndjson``, ``json``, ``csv``, ``yaml``/``yml``)."""

    def __init__(self, path: str | os.PathLike[str], *, format: str | None = None) -> None:
        self.path = Path(path)
        self.name = os.fspath(path)
        if format is None:
            format = _FORMATS.get(self.path.suffix.lower(), "")
        self.format = format
        self._stamp: tuple[int, int] | None = None
        self._referenced: frozenset[str] = frozenset()

    # -- pass 1 -------------------------------------------------------------

    def check(self, on_item: Callable[[ManifestItem], None] | None = None) -> ManifestSummary:
        """Validate the whole file; raise :class:`ManifestError` with every problem.

        ``on_item`` sees each valid item as it is read (for plans and cost
        estimates); nothing else is kept per item but its id, line and kind.
        """
        problems: list[ManifestProblem] = []
        seen: dict[str, tuple[int, str]] = {}
        edges: list[_Edge] = []
        groups: dict[tuple[Family, str, str | None], int] = {}
        count = 0
        if self.format not in ("jsonl", "json", "csv", "yaml"):
            raise ManifestError(
                [
                    ManifestProblem(
                        self.name,
                        0,
                        "",
                        f"unknown manifest format {self.path.suffix or self.format!r}: "
                        "use .jsonl, .csv or .yaml (or --format)",
                    )
                ]
            )
        try:
            stat = self.path.stat()
            for record in self._records():
                count += 1
                built = self._build(record)
                problems.extend(built.problems)
                if built.id is not None:
                    first = seen.get(built.id)
                    if first is not None:
                        problems.append(
                            self._problem(
                                record,
                                "id",
                                f"duplicate id {built.id!r} (first on line {first[0]})",
                            )
                        )
                    else:
                        seen[built.id] = (record.line, built.kind or "")
                    for field, dep in built.refs:
                        edges.append(_Edge(built.id, _locate(record, field), field, dep))
                item = built.item
                if item is None:
                    continue
                key = (item.family, item.kind, item.request.model)
                groups[key] = groups.get(key, 0) + 1
                if on_item is not None:
                    on_item(item)
        except OSError as exc:
            raise ManifestError(
                [ManifestProblem(self.name, 0, "", f"cannot read: {exc.strerror or exc}")]
            ) from exc
        if count == 0 and not problems:
            problems.append(ManifestProblem(self.name, 0, "", "no items"))
        problems.extend(self._check_refs(seen, edges))
        if problems:
            problems.sort(key=lambda p: p.line)
            raise ManifestError(problems)
        self._stamp = (stat.st_size, stat.st_mtime_ns)
        self._referenced = frozenset(edge.dep for edge in edges)
        dependent = len({edge.item for edge in edges})
        return ManifestSummary(self.path, self.format, count, groups, dependent)

    def _check_refs(
        self, seen: dict[str, tuple[int, str]], edges: list[_Edge]
    ) -> list[ManifestProblem]:
        problems: list[ManifestProblem] = []
        graph: dict[str, list[_Edge]] = {}
        for edge in edges:
            target = seen.get(edge.dep)
            if target is None:
                problems.append(
                    ManifestProblem(
                        self.name, edge.line, edge.field, f"no item with id {edge.dep!r}"
                    )
                )
                continue
            if target[1] and target[1] not in _VIDEO_RESULT_KINDS:
                problems.append(
                    ManifestProblem(
                        self.name,
                        edge.line,
                        edge.field,
                        f"item {edge.dep!r} is {target[1]!r}: only a video can be built on",
                    )
                )
            graph.setdefault(edge.item, []).append(edge)
        for cycle_edge, path in _cycles(graph):
            problems.append(
                ManifestProblem(
                    self.name, cycle_edge.line, cycle_edge.field, "cycle: " + " -> ".join(path)
                )
            )
        return problems

    # -- pass 2 -------------------------------------------------------------

    def __iter__(self) -> Iterator[ManifestItem]:
        """Re-read the (checked) file and yield its items in file order."""
        if self._stamp is None:
            self.check()
        stat = self.path.stat()
        if (stat.st_size, stat.st_mtime_ns) != self._stamp:
            # The file changed since it was checked: check it again.
            self.check()
        for record in self._records():
            built = self._build(record)
            if built.item is None:
                raise ManifestError(built.problems)
            yield built.item

    def submission_order(self) -> Iterator[ManifestItem]:
        """Items in file order, except that an item naming a *later* item waits
        until that one has been yielded (so dependencies always come first)."""
        done: set[str] = set()  # only ids that other items name
        waiting: dict[str, list[ManifestItem]] = {}
        items = iter(self)  # checks the file first, which fills self._referenced
        for item in items:
            ready = [item]
            while ready:
                current = ready.pop()
                missing = [dep for dep in current.deps if dep not in done]
                if missing:
                    waiting.setdefault(missing[0], []).append(current)
                    continue
                if current.id in self._referenced:
                    done.add(current.id)
                yield current
                ready.extend(reversed(waiting.pop(current.id, [])))

    # -- readers ------------------------------------------------------------

    def _records(self) -> Iterator[_Record]:
        if self.format == "csv":
            yield from self._csv_records()
        elif self.format == "yaml":
            yield from self._yaml_records()
        elif self.format == "json":
            yield from self._json_records()
        else:
            yield from self._jsonl_records()

    def _jsonl_records(self) -> Iterator[_Record]:
        with self.path.open(encoding="utf-8", errors="strict", newline="") as handle:
            for number, line in enumerate(handle, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                yield _json_record(number, text)

    def _json_records(self) -> Iterator[_Record]:
        with self.path.open(encoding="utf-8") as handle:
            head = handle.read(4096).lstrip()
        if head.startswith("["):
            # A JSON array: YAML is a superset of JSON and reports line numbers.
            yield from self._yaml_records()
        else:
            yield from self._jsonl_records()

    def _csv_records(self) -> Iterator[_Record]:
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header: list[str] | None = None
            columns: list[tuple[str, list[str | int]] | None] = []
            line = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    yield _Record(reader.line_num, None, [("", f"invalid CSV: {exc}")])
                    break
                start, line = line, reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = row
                    columns, problems = _csv_columns(header)
                    if problems:
                        yield _Record(start, None, problems)
                        return
                    continue
                yield _csv_record(start, header, columns, row)

    def _yaml_records(self) -> Iterator[_Record]:
        text = self.path.read_text(encoding="utf-8")
        loader = _YamlLoader(text)
        try:
            try:
                root = loader.get_single_node()
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                line = mark.line + 1 if mark is not None else 0
                yield _Record(line, None, [("", f"invalid YAML: {exc.problem or exc}")])
                return
            except yaml.YAMLError as exc:
                yield _Record(0, None, [("", f"invalid YAML: {exc}")])
                return
            if root is None:
                return
            if not isinstance(root, yaml.SequenceNode):
                yield _Record(
                    root.start_mark.line + 1,
                    None,
                    [("", "a YAML manifest is a list of items (each starting with '- ')")],
                )
                return
            for node in root.value:
                line = node.start_mark.line + 1
                try:
                    data = loader.construct_document(node)
                except yaml.YAMLError as exc:
                    yield _Record(line, None, [("", f"invalid YAML: {exc}")])
                    continue
                if not isinstance(data, dict):
                    yield _Record(line, None, [("", _not_an_object(data))])
                    continue
                yield _Record(line, data, [], _yaml_locator(node))
        finally:
            loader.dispose()

    # -- one item -----------------------------------------------------------

    def _problem(self, record: _Record, path: str, message: str) -> ManifestProblem:
        return ManifestProblem(self.name, _locate(record, path), path, message)

    def _build(self, record: _Record) -> _Built:
        problems = [self._problem(record, path, msg) for path, msg in record.problems]
        data = record.data
        if data is None:
            return _Built(None, problems)
        data = dict(data)

        item_id: str | None = None
        raw_id = data.pop("id", None)
        if raw_id is None:
            item_id = f"line-{record.line}"
        elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
            item_id = str(raw_id)
        elif not isinstance(raw_id, str):
            problems.append(self._problem(record, "id", "must be a string"))
        elif len(raw_id) > _MAX_ID_LENGTH:
            problems.append(self._problem(record, "id", f"longer than {_MAX_ID_LENGTH} characters"))
        elif not _ID_RE.match(raw_id):
            problems.append(
                self._problem(
                    record,
                    "id",
                    f"{raw_id!r} is not a safe file name: use letters, digits, '.', '_' "
                    "and '-' only, not starting with '.'",
                )
            )
        else:
            item_id = raw_id

        def problem(path: str, message: str) -> ManifestProblem:
            return self._problem(record, path, message)

        kind = _kind(data, problems, problem)
        if kind is None:
            return _Built(None, problems, item_id)

        refs: list[tuple[str, str]] = []
        renamed: dict[str, str] = {}
        _take_refs(kind, data, refs, renamed, problems, problem)
        reported = {p.path for p in problems}
        try:
            request = request_from_dict(kind, data)
        except ValidationError as exc:
            for api_problem in exc.problems:
                path = renamed.get(api_problem.path, api_problem.path)
                if path in reported and path in renamed.values():
                    continue  # already said in manifest terms
                message = api_problem.message
                if message == "unknown field":
                    message += _suggestion(kind, path)
                problems.append(problem(path, message))
            return _Built(None, problems, item_id, kind, refs)
        if problems or item_id is None:
            return _Built(None, problems, item_id, kind, refs)
        deps = tuple(dict.fromkeys(dep for _, dep in refs))
        item = ManifestItem(item_id, kind, record.line, request, deps)
        return _Built(item, problems, item_id, kind, refs)


def load_manifest(path: str | os.PathLike[str]) -> list[ManifestItem]:
    """Check a manifest and return all its items, dependencies first (small files)."""
    manifest = Manifest(path)
    manifest.check()
    return list(manifest.submission_order())


# -- item helpers -------------------------------------------------------------


def _kind(
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


def _take_refs(
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


def _suggestion(kind: str, path: str) -> str:
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


def _cycles(graph: dict[str, list[_Edge]]) -> Iterator[tuple[_Edge, list[str]]]:
    """Each cycle once, as (the edge closing it, the ids around it)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if root in state:
            continue
        path: list[str] = [root]
        state[root] = 1
        stack: list[Iterator[_Edge]] = [iter(graph.get(root, []))]
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


def _locate(record: _Record, path: str) -> int:
    if record.locate is None or not path:
        return record.line
    return record.locate(path)


def _not_an_object(value: object) -> str:
    kind = {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
    return f"an item must be an object (a mapping of fields), got {kind}"


# -- JSON ---------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_record(line: int, text: str) -> _Record:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _Record(line, None, [("", f"invalid JSON: {exc.msg} (column {exc.colno})")])
    except _DuplicateKey as exc:
        return _Record(line, None, [(str(exc), "given twice")])
    except ValueError as exc:
        return _Record(line, None, [("", f"invalid JSON: {exc}")])
    if not isinstance(data, dict):
        return _Record(line, None, [("", _not_an_object(data))])
    return _Record(line, data, [])


# -- CSV ----------------------------------------------------------------------

# Cells are strings, except: these fields hold JSON (an object or a list) ...
_CSV_JSON_FIELDS = frozenset(
    {
        "keyframes",
        "frame0",
        "frame1",
        "concepts",
        "image_ref",
        "style_ref",
        "character_ref",
        "identity0",
        "images",
        "modify_image_ref",
        "media",
        "first_frame",
    }
)
# ... these are true/false, and these are numbers.
_CSV_BOOL_FIELDS = frozenset({"loop", "sync"})
_CSV_FLOAT_FIELDS = frozenset({"weight", "sync_timeout"})
_CSV_INT_FIELDS = frozenset(REFRAME_INT_FIELDS)
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def _csv_columns(
    header: list[str],
) -> tuple[list[tuple[str, list[str | int]] | None], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    columns: list[tuple[str, list[str | int]] | None] = []
    seen: set[str] = set()
    for index, raw in enumerate(header, start=1):
        name = raw.strip()
        if not name:
            problems.append(("", f"column {index} has no name"))
            columns.append(None)
            continue
        if name in seen:
            problems.append((name, "column given twice"))
        seen.add(name)
        parts = name.split(".")
        if any(not part for part in parts):
            problems.append((name, "empty part in a dotted column name"))
            columns.append(None)
            continue
        path: list[str | int] = [int(part) if part.isdigit() else part for part in parts]
        if isinstance(path[0], int):
            problems.append((name, "a column name cannot start with a list index"))
            columns.append(None)
            continue
        columns.append((name, path))
    for name in seen:
        prefix = name + "."
        if any(other.startswith(prefix) for other in seen):
            problems.append((name, "given both as a whole (JSON) and as dotted columns"))
    return columns, problems


def _csv_record(
    line: int,
    header: list[str],
    columns: list[tuple[str, list[str | int]] | None],
    row: list[str],
) -> _Record:
    problems: list[tuple[str, str]] = []
    if len(row) > len(header):
        problems.append(("", f"row has {len(row)} cells but the header has {len(header)}"))
    tree: dict[str | int, Any] = {}
    for column, cell in zip(columns, row, strict=False):
        if column is None or cell == "":
            continue
        _, path = column
        leaf = path[-1]
        value, error = _csv_value(str(leaf) if isinstance(leaf, str) else "", cell)
        if error:
            problems.append((_dotted(path), error))
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = value
    data, list_problems = _csv_lists(tree, "")
    problems.extend(list_problems)
    assert isinstance(data, dict)
    return _Record(line, data, problems)


def _csv_value(leaf: str, cell: str) -> tuple[Any, str]:
    text = cell.strip()
    if leaf in _CSV_JSON_FIELDS:
        try:
            return json.loads(text), ""
        except json.JSONDecodeError as exc:
            return None, f"invalid JSON in cell: {exc.msg} (column {exc.colno})"
    if leaf in _CSV_BOOL_FIELDS:
        low = text.lower()
        if low in _TRUE:
            return True, ""
        if low in _FALSE:
            return False, ""
        return None, f"must be true or false, got {cell!r}"
    if leaf in _CSV_INT_FIELDS:
        try:
            return int(text), ""
        except ValueError:
            return None, f"must be an integer, got {cell!r}"
    if leaf in _CSV_FLOAT_FIELDS:
        try:
            return float(text), ""
        except ValueError:
            return None, f"must be a number, got {cell!r}"
    return cell, ""


def _csv_lists(node: Any, where: str) -> tuple[Any, list[tuple[str, str]]]:
    """Turn dicts keyed 0..n-1 (from ``image_ref.0.url`` columns) into lists."""
    if not isinstance(node, dict):
        return node, []
    problems: list[tuple[str, str]] = []
    converted: dict[Any, Any] = {}
    for key, value in node.items():
        child = f"{where}.{key}" if where else str(key)
        converted[key], sub = _csv_lists(value, child)
        problems.extend(sub)
    keys = list(converted)
    if keys and all(isinstance(key, int) for key in keys):
        if sorted(keys) != list(range(len(keys))):
            problems.append((where, "list columns must be numbered 0, 1, 2, ... without gaps"))
            return [], problems
        return [converted[index] for index in range(len(keys))], problems
    if any(isinstance(key, int) for key in keys):
        problems.append((where, "mixes list indexes and field names"))
        return {}, problems
    return converted, problems


def _dotted(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- YAML ---------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers (``16:9`` stays a string)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _yaml_locator(item: yaml.Node) -> Callable[[str], int]:
    def locate(path: str) -> int:
        node = item
        line = item.start_mark.line + 1
        for name, index in _PATH_PART.findall(path):
            if name and isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == name:
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    return line
            elif index and isinstance(node, yaml.SequenceNode):
                position = int(index)
                if position >= len(node.value):
                    return line
                node = node.value[position]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    return locate
