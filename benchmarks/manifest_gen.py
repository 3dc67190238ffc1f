"""Write a large JSONL manifest line by line (never held in memory).

``python -m benchmarks.manifest_gen OUT.jsonl --items 100000 [--type video]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUBJECTS = ("a lighthouse", "a red fox", "a paper boat", "a glass city", "an old tram")
PLACES = ("at dawn", "in the rain", "under neon light", "in a snow storm", "by the sea")

MODELS = {"image": "photon-flash-1", "video": "ray-flash-2"}


def item(index: int, kind: str = "image") -> dict[str, object]:
    """Manifest item ``index``: a valid request of ``kind`` with a unique id and prompt."""
    prompt = (
        f"{SUBJECTS[index % len(SUBJECTS)]} {PLACES[(index // len(SUBJECTS)) % len(PLACES)]}, "
        f"variation {index}"
    )
    data: dict[str, object] = {
        "id": f"item-{index:07d}",
        "type": kind,
        "model": MODELS[kind],
        "prompt": prompt,
        "aspect_ratio": "1:1",
    }
    if kind == "video":
        data["resolution"] = "540p"
        data["duration"] = "5s"
    return data


def write_manifest(path: str | Path, items: int, *, kind: str = "image") -> Path:
    """Stream ``items`` manifest lines to ``path`` and return it."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        for index in range(items):
            out.write(json.dumps(item(index, kind), separators=(",", ":")))
            out.write("\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manifest_gen", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--type", dest="kind", choices=sorted(MODELS), default="image")
    args = parser.parse_args(argv)
    write_manifest(args.out, args.items, kind=args.kind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
