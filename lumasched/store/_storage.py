"""Disk failures as one line a user can act on: no space, read-only, a directory in
the way, permission denied. Used by the journal, the results file and downloads."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from lumasched.errors import StorageError

__all__ = [
    "first_storage_error",
    "is_storage_error",
    "os_reason",
    "sqlite_storage_error",
    "storage_error",
]

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def os_reason(exc: OSError, path: Path | str) -> str:
    """What went wrong writing ``path``, in a few words (``no space left on DIR``)."""
    path = Path(path)
    code = exc.errno
    if code in _NO_SPACE:
        return f"no space left on {path.parent}"
    if code == errno.EROFS:
        return f"read-only file system: {path.parent}"
    if code == errno.EISDIR:
        return f"a directory is in the way: {path}"
    if code == errno.ENOTDIR:
        return f"a file is in the way of the directory {path.parent}"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: {path}"
    return f"cannot write {path}: {exc.strerror or exc}"


def storage_error(exc: OSError, path: Path | str, what: str) -> StorageError:
    """A ``StorageError`` for an ``OSError`` writing the ``what`` file at ``path``."""
    return StorageError(f"{os_reason(exc, path)} ({what})", path=str(path), what=what)


# SQLite reports disk trouble with its own codes (sqlite3.Error.sqlite_errorname).
_SQLITE_REASONS = {
    "SQLITE_FULL": errno.ENOSPC,
    "SQLITE_READONLY": errno.EROFS,
    "SQLITE_READONLY_DIRECTORY": errno.EROFS,
    "SQLITE_READONLY_DBMOVED": errno.EROFS,
    "SQLITE_CANTOPEN": errno.EACCES,
    "SQLITE_PERM": errno.EACCES,
    "SQLITE_IOERR_WRITE": errno.EIO,
    "SQLITE_IOERR_FSYNC": errno.EIO,
    "SQLITE_IOERR_SHORT_READ": errno.EIO,
    "SQLITE_IOERR_TRUNCATE": errno.EIO,
    "SQLITE_IOERR": errno.EIO,
}


def is_storage_error(exc: BaseException) -> bool:
    """An SQLite error that means the disk, not the data, is the problem."""
    name = getattr(exc, "sqlite_errorname", None)
    if not isinstance(exc, sqlite3.Error) or not isinstance(name, str):
        return False
    return name in _SQLITE_REASONS or name.startswith(("SQLITE_IOERR", "SQLITE_READONLY"))


def sqlite_storage_error(exc: sqlite3.Error, path: Path, what: str = "journal") -> StorageError:
    """The ``StorageError`` for an SQLite disk failure on the database at ``path``."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    code = _SQLITE_REASONS.get(name)
    if code is None:
        code = errno.EROFS if name.startswith("SQLITE_READONLY") else errno.EIO
    if code == errno.EIO:
        message = f"disk I/O error writing {path} ({what}): {exc}"
    else:
        message = f"{os_reason(OSError(code, str(exc)), path)} ({what})"
    return StorageError(message, path=str(path), what=what)


def first_storage_error(group: BaseExceptionGroup[StorageError]) -> StorageError:
    """The first ``StorageError`` of a group of them (every task that wrote saw one)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, StorageError)
    return error
