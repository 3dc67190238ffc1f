"""Odd bytes in manifests are FILE:LINE problems, never tracebacks; nothing is sent."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from lumasched import cli
from lumasched.cli import EXIT_USAGE
from lumasched.manifest import Manifest, ManifestError
from tests import _cli_fixtures as fx
from tests._cli_fixtures import ThreadedEmulator

emulator = fx.emulator
cli_env = fx.cli_env

ITEM = {"id": "a", "model": "photon-1", "prompt": "a café at dawn"}
LINE = json.dumps(ITEM, ensure_ascii=False) + "\n"
YAML = "- id: a\n  model: photon-1\n  prompt: a café at dawn\n"
DEEP = "[" * 100_000 + "]" * 100_000


def _problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        Manifest(path).check()
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "latin1.jsonl",
            LINE.encode("latin-1"),
            "latin1.jsonl:1: not UTF-8 text: byte 0xe9 at column 50 (save the manifest as UTF-8)",
        ),
        (
            "later.jsonl",
            LINE.encode() + LINE.replace('"a"', '"b"').encode("latin-1"),
            "later.jsonl:2: not UTF-8 text: byte 0xe9",
        ),
        ("utf16.jsonl", LINE.encode("utf-16"), "utf16.jsonl:1: the file is UTF-16 text"),
        ("utf32.csv", "id,model\n".encode("utf-32"), "utf32.csv:1: the file is UTF-32 text"),
        ("nul.jsonl", LINE.encode("utf-16-le"), "nul.jsonl:1: NUL byte at column 2"),
        (
            "latin1.csv",
            "id,model,prompt\na,photon-1,café\n".encode("latin-1"),
            "latin1.csv:2: not UTF-8 text: byte 0xe9 at column 15",
        ),
        ("latin1.yaml", YAML.encode("latin-1"), "latin1.yaml:3: not UTF-8 text: byte 0xe9"),
        (
            "deep.jsonl",
            json.dumps({**ITEM, "x": 0}).replace("0}", DEEP + "}").encode(),
            "deep.jsonl:1: invalid JSON: nested deeper than 32 levels",
        ),
        (
            "deep.yaml",
            (YAML + "  extra: " + DEEP + "\n").encode(),
            "deep.yaml:4: nested deeper than 32 levels",
        ),
        (
            "shallow-deep.yaml",
            (YAML + "  extra: " + "[" * 40 + "]" * 40 + "\n").encode(),
            "shallow-deep.yaml:4: nested deeper than 32 levels",
        ),
        (
            "deep.csv",
            ("id,keyframes\na," + '"' + "[" * 50 + "]" * 50 + '"\n').encode(),
            "deep.csv:2: keyframes: invalid JSON in cell: nested deeper than 32 levels",
        ),
        (
            "tags.yaml",
            (YAML + "  extra: !!python/object/apply:os.system ['true']\n").encode(),
            "tags.yaml:4: YAML tag !!python/object/apply:os.system is not allowed",
        ),
        (
            "binary.yaml",
            b"- id: a\n  model: photon-1\n  prompt: !!binary aGVsbG8gd29ybGQ=\n",
            "binary.yaml:3: YAML tag !!binary is not allowed (plain values only)",
        ),
        (
            "laughs.yaml",
            (
                YAML
                + "  l0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
                + "".join(
                    f"  l{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n" for n in range(1, 7)
                )
            ).encode(),
            "laughs.yaml:8: more than 100000 values once aliases are expanded",
        ),
        (
            "long.jsonl",
            b"x" * (1024 * 1024 + 10) + b"\n",
            "long.jsonl:1: line longer than 1048576 bytes",
        ),
    ],
)
def test_odd_bytes_are_file_line_problems(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    """Undecodable text, wide encodings, deep nesting, object tags: one FILE:LINE problem."""
    path = tmp_path / name
    path.write_bytes(data)
    problems = _problems(path)
    assert any(p.startswith(str(path) + expected[len(name) :]) for p in problems), problems


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.json", "bom.yaml", "bom.csv"])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path, name: str) -> None:
    """Editors that save UTF-8 with a BOM (Notepad, Excel) make readable manifests."""
    text = {
        "bom.jsonl": LINE,
        "bom.json": "[" + LINE + "]",
        "bom.yaml": YAML,
        "bom.csv": "id,model,prompt\na,photon-1,a café at dawn\n",
    }[name]
    path = tmp_path / name
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    assert [item.request.prompt for item in Manifest(path)] == ["a café at dawn"]  # type: ignore[attr-defined]


def test_odd_bytes_exit_2_and_send_nothing(
    cli_env: ThreadedEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lumasched run` on a Latin-1 manifest: FILE:LINE on stderr, exit 2, no create."""
    path = tmp_path / "m.jsonl"
    path.write_bytes(LINE.encode("latin-1"))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path}:1: not UTF-8 text" in err and "Traceback" not in err
    assert cli_env.inspect.creates_total == 0
