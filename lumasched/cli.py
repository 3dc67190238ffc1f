"""The ``lumasched`` command line. The only module that prints."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("lumasched: commands arrive with the CLI issue", args, file=sys.stderr)
    return 2
