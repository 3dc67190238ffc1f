"""What every command shares: messages on stdout / stderr (JSON log lines with
``--log-format json``), a stdout that survives its reader leaving, the settings
from the arguments, a client for one command, tables and dollars."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from lumasched._config import API_KEY_HELP, ENV_API_KEY, Settings
from lumasched.errors import APIStatusError, ConfigurationError

log = logging.getLogger("lumasched")


_json_stderr = False
"""``--log-format json``: stderr carries JSON lines only, so messages go through the log."""


def out(text: str = "", *, file: TextIO | None = None) -> None:
    if _json_stderr and file is sys.stderr:
        log.error("%s", text, extra={"event": "cli.message"})
        return
    print(text, file=file or sys.stdout, flush=True)


class QuietPipe:
    """stdout that goes quiet once its reader has gone (``lumasched run ... | head``):
    the run carries on (nothing paid for is dropped) and prints no traceback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
                self._stream.flush()
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.broken = True
        # The interpreter flushes stdout once more on exit: point the descriptor at
        # /dev/null so that flush has nowhere to fail.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def err(text: str) -> None:
    if _json_stderr:
        log.error("%s", text, extra={"event": "cli.error"})
        return
    print(f"lumasched: {text}", file=sys.stderr, flush=True)


def setup_logging(verbose: bool, log_format: str = "human") -> None:
    global _json_stderr
    from lumasched.observe import configure_logging

    _json_stderr = log_format == "json"
    # JSON lines carry every job state change (INFO); human lines stay quiet.
    quiet = logging.INFO if _json_stderr else logging.WARNING
    handler = configure_logging(
        "json" if _json_stderr else "human",
        level=logging.DEBUG if verbose else quiet,
        stream=sys.stderr,
        secrets=[_env_key()],
    )
    if not verbose:
        # ``run --emulator``: the in-process emulator's request lines are noise at INFO.
        handler.addFilter(
            lambda r: r.levelno >= logging.WARNING or not r.name.startswith("lumasched.emulator")
        )


def _env_key() -> str | None:
    """The key to scrub from log lines, if the environment holds one."""
    try:
        return Settings.from_env().api_key
    except ConfigurationError:
        return None


def settings_from(args: argparse.Namespace, *, need_key: bool = True) -> Settings:
    settings = Settings.from_env(
        base_url=getattr(args, "base_url", None), redis_url=getattr(args, "redis", None)
    )
    if need_key and settings.api_key is None:
        raise ConfigurationError(f"no API key: {API_KEY_HELP}")
    return settings


def with_client(args: argparse.Namespace, body: Callable[[Any], Awaitable[int]]) -> int:
    import asyncio

    from lumasched.api import LumaClient

    settings = settings_from(args)

    async def go() -> int:
        async with LumaClient(settings=settings) as client:
            return await body(client)

    return asyncio.run(go())


def rejected_key(exc: APIStatusError) -> str:
    return f"the API rejected the key (HTTP {exc.status}) — check {ENV_API_KEY}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def usd(cents: float) -> str:
    dollars = cents / 100
    # Sub-cent prices (a photon-flash-1 image) would otherwise read as $0.00.
    return f"${dollars:,.3f}" if 0 < dollars < 0.01 else f"${dollars:,.2f}"
