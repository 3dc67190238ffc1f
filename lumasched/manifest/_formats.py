"""Reading manifest files: JSONL (and JSON arrays), CSV and YAML, each item a
``Record`` of its data, its line and any problem found while reading it.

Validating the items is :mod:`lumasched.manifest`'s job; this module only turns
bytes into plain data, with line numbers for ``FILE:LINE`` errors. Odd bytes are
problems like any other: text that is not UTF-8 (a UTF-8 byte order mark is
accepted and skipped), lines longer than ``MAX_LINE_BYTES``, items nested deeper
than ``MAX_DEPTH``, and YAML tags that would construct anything but plain values.
"""

from __future__ import annotations

import codecs
import csv
import json
import types
import typing
from collections.abc import Callable, Generator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from lumasched.api._models import REQUEST_CLASSES

__all__ = ["MAX_DEPTH", "MAX_LINE_BYTES", "Record", "read_records"]

MAX_DEPTH = 32
"""Deepest nesting of lists and objects in an item (real items nest 4 levels)."""
MAX_LINE_BYTES = 1024 * 1024
"""Longest manifest line (a JSONL item, a CSV row)."""
_MAX_NODES = 100_000
"""Most values in one YAML item once its aliases are expanded."""

_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class _BadText(ValueError):
    """The manifest cannot be read on from ``line``: ``message`` says why."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message

    def record(self) -> Record:
        return Record(self.line, None, [("", self.message)])


def _text_lines(path: Path) -> Generator[str, None, None]:
    """The file's lines as text (line endings kept), checked to be UTF-8."""
    with path.open("rb") as handle:
        lines = iter(partial(handle.readline, MAX_LINE_BYTES + 1), b"")
        for number, raw in enumerate(lines, start=1):
            if number == 1:
                raw = _skip_bom(raw)
            if len(raw) > MAX_LINE_BYTES:
                raise _BadText(number, f"line longer than {MAX_LINE_BYTES} bytes")
            if b"\x00" in raw:
                column = raw.index(b"\x00") + 1
                raise _BadText(
                    number, f"NUL byte at column {column}: not UTF-8 text (UTF-16?); save as UTF-8"
                )
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _BadText(
                    number,
                    f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
                    "(save the manifest as UTF-8)",
                ) from None


def _skip_bom(first: bytes) -> bytes:
    """The first line without a UTF-8 byte order mark; UTF-16/32 ones are refused."""
    for bom, name in _WIDE_BOMS:
        if first.startswith(bom):
            raise _BadText(1, f"the file is {name} text: save it as UTF-8")
    return first.removeprefix(codecs.BOM_UTF8)


def _too_deep(value: Any) -> bool:
    """Nested deeper than ``MAX_DEPTH`` (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return False


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def _parse_json(text: str, **kwargs: Any) -> Any:
    """``json.loads``, with nesting past ``MAX_DEPTH`` a ``ValueError`` too."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    # Nesting needs brackets: most items have too few to be worth walking.
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        raise ValueError(_TOO_DEEP)
    return value


@attrs.frozen
class Record:
    """One manifest item as read: ``data`` is None when it could not be read."""

    line: int
    data: dict[str, Any] | None
    problems: list[tuple[str, str]]
    locate: Callable[[str], int] | None = None
    """The line of a field path within the item (YAML), else the item's line."""


def read_records(path: Path, format: str) -> Iterator[Record]:
    """The records of the manifest at ``path`` (one per item, or per unreadable part)."""
    if format == "csv":
        yield from _csv_records(path)
    elif format == "yaml":
        from lumasched.manifest._yaml import yaml_records  # PyYAML only for YAML

        yield from yaml_records(path)
    elif format == "json":
        yield from _json_records(path)
    else:
        yield from _jsonl_records(path)


def _jsonl_records(path: Path) -> Iterator[Record]:
    try:
        for number, line in enumerate(_text_lines(path), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            yield _json_record(number, text)
    except _BadText as exc:
        yield exc.record()


def _json_records(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"["):
        # A JSON array: YAML is a superset of JSON and reports line numbers.
        from lumasched.manifest._yaml import yaml_records

        yield from yaml_records(path)
    else:
        yield from _jsonl_records(path)


def _csv_records(path: Path) -> Iterator[Record]:
    lines = _text_lines(path)
    try:
        reader = csv.reader(lines, strict=True)
        header: list[str] | None = None
        columns: list[tuple[str, list[str | int]] | None] = []
        line = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except _BadText as exc:
                yield exc.record()
                break
            except csv.Error as exc:
                yield Record(reader.line_num, None, [("", f"invalid CSV: {exc}")])
                break
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = row
                columns, problems = _csv_columns(header)
                if problems:
                    yield Record(start, None, problems)
                    return
                continue
            yield _csv_record(start, header, columns, row)
    finally:
        lines.close()


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


def _json_record(line: int, text: str) -> Record:
    try:
        data = _parse_json(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return Record(line, None, [("", f"invalid JSON: {exc.msg} (column {exc.colno})")])
    except _DuplicateKey as exc:
        return Record(line, None, [(str(exc), "given twice")])
    except ValueError as exc:
        return Record(line, None, [("", f"invalid JSON: {exc}")])
    if not isinstance(data, dict):
        return Record(line, None, [("", _not_an_object(data))])
    return Record(line, data, [])


# -- CSV ----------------------------------------------------------------------


def _cell_types() -> dict[str, type]:
    """Field name -> what a CSV cell of that name holds, read off the request models
    (the schema is written once, in ``lumasched.api``): ``bool``, ``int``, ``float``,
    or ``dict`` for JSON (an object or a list: a nested model, a tuple, a union of
    models); a name missing is a string. A name of two kinds would be ambiguous."""
    kinds: dict[str, type] = {}
    todo: list[type] = list(REQUEST_CLASSES.values())
    seen: set[type] = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is typing.ClassVar:
                continue
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            options = [t for t in typing.get_args(hint) if union] or [hint]
            options = [t for t in options if t is not type(None)]
            models = [t for t in options if attrs.has(t)]
            todo.extend(models)
            if models or any(typing.get_origin(t) is tuple for t in options):
                kind: type = dict
            elif len(options) == 1 and options[0] in (bool, int, float):
                kind = options[0]
            else:
                continue  # a string (what every cell already is)
            if kinds.setdefault(name.lstrip("_"), kind) is not kind:
                raise TypeError(f"field {name!r} has two kinds in the request models")
    return kinds


_CELL_TYPES = _cell_types()
# Cells are strings, except: these fields hold JSON (an object or a list) ...
_CSV_JSON_FIELDS = frozenset(name for name, kind in _CELL_TYPES.items() if kind is dict)
# ... these are true/false, and these are numbers.
_CSV_BOOL_FIELDS = frozenset(name for name, kind in _CELL_TYPES.items() if kind is bool)
_CSV_FLOAT_FIELDS = frozenset(name for name, kind in _CELL_TYPES.items() if kind is float)
_CSV_INT_FIELDS = frozenset(name for name, kind in _CELL_TYPES.items() if kind is int)
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
        if len(parts) > MAX_DEPTH:
            problems.append((name[:80], _TOO_DEEP))
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
) -> Record:
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
    return Record(line, data, problems)


def _csv_value(leaf: str, cell: str) -> tuple[Any, str]:
    text = cell.strip()
    if leaf in _CSV_JSON_FIELDS:
        try:
            return _parse_json(text), ""
        except json.JSONDecodeError as exc:
            return None, f"invalid JSON in cell: {exc.msg} (column {exc.colno})"
        except ValueError as exc:
            return None, f"invalid JSON in cell: {exc}"
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
