"""The ``lumasched`` command line: the only package that prints.

::

    lumasched run MANIFEST --out DIR [--emulator] [--dry-run] [--budget USD] ...
    lumasched status DIR
    lumasched get ID | list | delete ID... | download ID | concepts | camera-motions | credits
    lumasched emulator ...      (lumasched.emulator.main)
    lumasched limits ...        (lumasched.cli._limits.main)

Exit status: 0 every item completed; 1 some generations failed (or were not
run: budget reached); 2 usage or manifest error (nothing sent), the key rejected,
items changed since created, or the folder in use by another run (nothing sent
for the items concerned); 69 the API unreachable; 74 the journal or results
file cannot be written (disk full, read-only); 130 interrupted (Ctrl-C); 143
terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from lumasched.cli._console import QuietPipe, err, setup_logging
from lumasched.cli._exits import (
    EXIT_CLAIMS_WAIT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORAGE,
    EXIT_TERMINATED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from lumasched.cli._parser import DELEGATED, build_parser, parse_size
from lumasched.errors import ConfigurationError, JournalError, LumaError, StorageError

__all__ = [
    "EXIT_CLAIMS_WAIT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STORAGE",
    "EXIT_TERMINATED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "parse_size",
]

_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("lumasched.cli._run", "cmd_run"),
    "gallery": ("lumasched.cli._status", "cmd_gallery"),
    "status": ("lumasched.cli._status", "cmd_status"),
    "get": ("lumasched.cli._account", "cmd_get"),
    "list": ("lumasched.cli._account", "cmd_list"),
    "delete": ("lumasched.cli._account", "cmd_delete"),
    "download": ("lumasched.cli._account", "cmd_download"),
    "concepts": ("lumasched.cli._account", "cmd_concepts"),
    "camera-motions": ("lumasched.cli._account", "cmd_camera_motions"),
    "credits": ("lumasched.cli._account", "cmd_credits"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in DELEGATED:
        name = DELEGATED[args_list[0]][0]
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            err(f"'{args_list[0]}' is not available in this installation")
            return EXIT_USAGE
        try:
            result: int = module.main(args_list[1:])
        except SystemExit as exc:  # their argparse (--help, usage errors)
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        return result
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    setup_logging(getattr(args, "verbose", False), getattr(args, "log_format", "human"))
    home, function = _COMMANDS[args.command]
    # Each command's module loads only when it runs: `lumasched --help` and a plain
    # `run` start without the gallery, Redis or the emulator (issue #19's makespan
    # counts process start).
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(home), function)
    stdout = sys.stdout
    sys.stdout = QuietPipe(stdout)
    try:
        return handler(args)
    except StorageError as exc:
        err(
            f"{exc}; nothing more was created: free the space (or fix the permissions) "
            "and run the same command again to resume"
        )
        return EXIT_STORAGE
    except ConfigurationError as exc:
        err(str(exc))
        return EXIT_USAGE
    except JournalError as exc:
        err(str(exc))
        return EXIT_USAGE
    except LumaError as exc:
        err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    finally:
        sys.stdout = stdout
