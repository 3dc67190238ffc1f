"""One owner at a time: an exclusive OS lock on a file beside what it guards.

A journal (and the output folder of a ``lumasched run``) belongs to one process
at a time: two runs of one batch on one folder would each create every item.
The lock is ``flock(LOCK_EX)`` on ``<path>.lock``, so the kernel drops it when
the holder dies in any way (SIGKILL, power cut): a dead run never blocks the
next one, and there is no stale-lock cleanup to get wrong. ``flock`` locks
belong to an open file, not to a process, so a second ``Journal`` on the same
file in the *same* process is refused too.

The lock file holds who has it (pid, host, since when), for the refusal
message; it is emptied on release and never deleted (deleting it would let a
third process lock a new file while the second still holds the old one).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

import attrs

from lumasched.errors import JournalLockedError, holder_text

__all__ = ["FOLDER", "Holder", "OwnerLock", "holder_of", "lock_path"]

FOLDER = ".lumasched"
"""What a run locks in its output folder when its journal lives elsewhere
(``DIR/.lumasched.lock``)."""

_GRACE = 0.5
"""Seconds a refused lock is tried again: ``holder_of`` takes a shared lock
for an instant, which must not turn a run away."""
_RETRY_EVERY = 0.02


@attrs.frozen
class Holder:
    """Who holds a lock, as its lock file says (fields None when unreadable)."""

    pid: int | None = None
    host: str | None = None
    since: float | None = None

    def __str__(self) -> str:
        return holder_text(self.pid, self.host, self.since)


def lock_path(path: Path) -> Path:
    """The lock file that guards ``path``."""
    return path.with_name(path.name + ".lock")


class OwnerLock:
    """The exclusive lock guarding ``guarded``; raises ``JournalLockedError`` at once
    (after a short grace) if another open file holds it. Release with ``release()``."""

    def __init__(self, guarded: Path, *, what: str = "journal") -> None:
        self.path = lock_path(guarded)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + _GRACE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise JournalLockedError(
                        guarded, holder.pid, holder.host, holder.since, what
                    ) from None
                time.sleep(_RETRY_EVERY)
            except BaseException:
                os.close(fd)
                raise
        self._fd: int | None = fd
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        data = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        """Give the lock up (safe to call twice)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def __repr__(self) -> str:
        return f"<OwnerLock {str(self.path)!r} {'held' if self._fd is not None else 'released'}>"


def holder_of(guarded: Path) -> Holder | None:
    """Who holds the lock on ``guarded`` now, or None if no one does. Reads only
    (a shared lock for an instant, which ``OwnerLock``'s grace absorbs)."""
    try:
        fd = os.open(lock_path(guarded), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> Holder:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw)
        return Holder(pid=int(data["pid"]), host=str(data["host"]), since=float(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Holder()  # just being written, or not ours
