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
id>"`` for upscale and audio.

Wherever the API takes a media URL an item may name a local file instead, with
``"path"`` in place of ``"url"`` (relative to the manifest's folder): a keyframe
``{"type": "image", "path": "stills/shoe.jpg"}``, ``{"path": ..., "weight": 0.8}``
in ``image_ref``/``style_ref``, ``modify_image_ref``, ``media`` and
``first_frame``, and ``{"path": ...}`` among ``character_ref.identity0.images``.
Each file is checked while the manifest is (it exists, is readable, is an image
or a video as the field expects, of a format and size the API takes); the
request holds its ``file://`` URL until the run uploads it. ::

    >>> manifest = Manifest("batch.jsonl")
    >>> summary = manifest.check()          # raises ManifestError
    >>> for item in manifest.submission_order():
    ...     print(item.id, item.kind, item.deps)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from lumasched.api import (
    CreateRequest,
    Family,
    family_of,
    replace_generation_refs,
    request_from_dict,
)
from lumasched.api._inputs import is_local, local_path, media_slots
from lumasched.api._models import KINDS
from lumasched.errors import Problem, ValidationError
from lumasched.inputs._checks import InputFile, InputProblem, check_input
from lumasched.manifest._formats import Record, read_records
from lumasched.manifest._items import (
    VIDEO_RESULT_KINDS,
    VIDEO_SOURCE_KINDS,
    Edge,
    cycles,
    kind_of,
    locate,
    ref_placeholder,
    suggestion,
    take_paths,
    take_refs,
)

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

_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")
_MAX_ID_LENGTH = 128

_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".yaml": "yaml",
    ".yml": "yaml",
}


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
class _Built:
    item: ManifestItem | None
    problems: list[ManifestProblem]
    id: str | None = None
    kind: str | None = None
    refs: list[tuple[str, str]] = attrs.Factory(list)


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
        self._checked_files: dict[tuple[Path, str], InputFile | str] = {}
        """(path, expected media) -> the checked file, or what is wrong with it"""

    @property
    def input_files(self) -> list[InputFile]:
        """The distinct local files the (checked) manifest's items name."""
        found = (f for f in self._checked_files.values() if isinstance(f, InputFile))
        return list({f.path: f for f in found}.values())

    # -- pass 1 -------------------------------------------------------------

    def check(self, on_item: Callable[[ManifestItem], None] | None = None) -> ManifestSummary:
        """Validate the whole file; raise :class:`ManifestError` with every problem.

        ``on_item`` sees each valid item as it is read (for plans and cost
        estimates); nothing else is kept per item but its id, line and kind.
        """
        problems: list[ManifestProblem] = []
        seen: dict[str, tuple[int, str]] = {}
        edges: list[Edge] = []
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
                        edges.append(Edge(built.id, locate(record, field), field, dep))
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
        self, seen: dict[str, tuple[int, str]], edges: list[Edge]
    ) -> list[ManifestProblem]:
        problems: list[ManifestProblem] = []
        graph: dict[str, list[Edge]] = {}
        for edge in edges:
            target = seen.get(edge.dep)
            if target is None:
                problems.append(
                    ManifestProblem(
                        self.name, edge.line, edge.field, f"no item with id {edge.dep!r}"
                    )
                )
                continue
            if target[1] and target[1] not in VIDEO_RESULT_KINDS:
                problems.append(
                    ManifestProblem(
                        self.name,
                        edge.line,
                        edge.field,
                        f"item {edge.dep!r} is {target[1]!r}: only a video can be built on",
                    )
                )
            graph.setdefault(edge.item, []).append(edge)
        for cycle_edge, path in cycles(graph):
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

    def _records(self) -> Iterator[Record]:
        return read_records(self.path, self.format)

    # -- one item -----------------------------------------------------------

    def _problem(self, record: Record, path: str, message: str) -> ManifestProblem:
        return ManifestProblem(self.name, locate(record, path), path, message)

    def _build(self, record: Record) -> _Built:
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

        kind = kind_of(data, problems, problem)
        if kind is None:
            return _Built(None, problems, item_id)

        refs: list[tuple[str, str]] = []
        renamed: dict[str, str] = {}
        take_refs(kind, data, refs, renamed, problems, problem)
        files: list[tuple[str, str, str]] = []
        for key, value in data.items():
            data[key] = take_paths(value, key, self.path.parent, files, problems, problem)
        for field, url, where in files:
            renamed[where if field.endswith("].path") else f"{where}.url"] = field
            expect = "video" if kind in VIDEO_SOURCE_KINDS and where == "media" else "image"
            wrong = self._check_file(local_path(url), expect) if is_local(url) else None
            if wrong is not None:
                problems.append(problem(field, wrong))
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
                    message += suggestion(kind, path)
                problems.append(problem(path, message))
            return _Built(None, problems, item_id, kind, refs)
        named = {url for _, url, _ in files}
        for slot in media_slots(request):  # a file:// URL written out in "url"
            if is_local(slot.url) and slot.url not in named:
                wrong = self._check_file(local_path(slot.url), slot.expect)
                if wrong is not None:
                    problems.append(problem(slot.field, wrong))
        if problems or item_id is None:
            return _Built(None, problems, item_id, kind, refs)
        deps = tuple(dict.fromkeys(dep for _, dep in refs))
        item = ManifestItem(item_id, kind, record.line, request, deps)
        return _Built(item, problems, item_id, kind, refs)

    def _check_file(self, path: Path, expect: str) -> str | None:
        """What is wrong with ``path`` as an input (None: nothing), once per file."""
        key = (path, expect)
        found = self._checked_files.get(key)
        if found is None:
            try:
                found = check_input(path, "video" if expect == "video" else "image")
            except InputProblem as exc:
                found = str(exc)
            self._checked_files[key] = found
        return found if isinstance(found, str) else None


def load_manifest(path: str | os.PathLike[str]) -> list[ManifestItem]:
    """Check a manifest and return all its items, dependencies first (small files)."""
    manifest = Manifest(path)
    manifest.check()
    return list(manifest.submission_order())
