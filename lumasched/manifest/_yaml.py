"""Reading YAML manifests (and JSON arrays, which YAML reads with line numbers):
plain values only, YAML 1.1's base-60 numbers left as strings, aliases bounded.
Loaded only for such a file: PyYAML is not imported for JSONL or CSV."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from lumasched.manifest._formats import (
    _MAX_NODES,
    _TOO_DEEP,
    MAX_DEPTH,
    Record,
    _BadText,
    _not_an_object,
    _text_lines,
)

__all__ = ["yaml_records"]


def yaml_records(path: Path) -> Iterator[Record]:
    try:
        text = "".join(_text_lines(path))
    except _BadText as exc:
        yield exc.record()
        return
    loader = _YamlLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            yield Record(loader.get_mark().line + 1, None, [("", _TOO_DEEP)])
            return
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            yield Record(line, None, [("", f"invalid YAML: {exc.problem or exc}")])
            return
        except yaml.YAMLError as exc:
            yield Record(0, None, [("", f"invalid YAML: {exc}")])
            return
        if root is None:
            return
        if not isinstance(root, yaml.SequenceNode):
            yield Record(
                root.start_mark.line + 1,
                None,
                [("", "a YAML manifest is a list of items (each starting with '- ')")],
            )
            return
        for node in root.value:
            line = node.start_mark.line + 1
            try:
                _check_yaml(node)
            except _BadText as exc:
                yield exc.record()
                continue
            try:
                data = loader.construct_document(node)
            except yaml.YAMLError as exc:
                yield Record(line, None, [("", f"invalid YAML: {exc}")])
                continue
            if not isinstance(data, dict):
                yield Record(line, None, [("", _not_an_object(data))])
                continue
            yield Record(line, data, [], _yaml_locator(node))
    finally:
        loader.dispose()


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

_YAML_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")
)


def _check_yaml(item: yaml.Node) -> None:
    """Raise ``_BadText`` for an item nested too deep, too large once its aliases
    are expanded, or tagged to construct anything but plain values."""
    sizes: dict[int, int] = {}

    def walk(node: yaml.Node, depth: int) -> int:
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            raise _BadText(line, _TOO_DEEP)
        if node.tag not in _YAML_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise _BadText(line, f"YAML tag {tag} is not allowed (plain values only)")
        known = sizes.get(id(node))
        if known is not None:
            return known  # an alias of a node already counted
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(walk(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(walk(k, depth + 1) + walk(v, depth + 1) for k, v in node.value)
        if size > _MAX_NODES:
            raise _BadText(line, f"more than {_MAX_NODES} values once aliases are expanded")
        sizes[id(node)] = size
        return size

    walk(item, 0)


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
