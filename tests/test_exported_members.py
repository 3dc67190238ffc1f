"""The public surface: every name in lumasched.__all__ exists, and nothing private leaks."""

from __future__ import annotations

import builtins
import importlib
import inspect
import subprocess
import sys

import pytest

import lumasched


def test_all_names_resolve() -> None:
    """Every advertised name can be imported from the package root."""
    for name in lumasched.__all__:
        assert getattr(lumasched, name) is not None, name


def test_all_is_unique() -> None:
    """__all__ names each export once."""
    assert len(set(lumasched.__all__)) == len(lumasched.__all__)


def test_public_classes_claim_a_public_home() -> None:
    """Exported classes and functions live in lumasched modules, not in third-party ones."""
    for name in lumasched.__all__:
        obj = getattr(lumasched, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        module = getattr(obj, "__module__", "lumasched")
        assert module.startswith("lumasched"), (name, module)


def test_import_is_light() -> None:
    """Importing lumasched does not import the emulator or redis until they are used."""
    code = (
        "import sys, lumasched; print('lumasched.emulator' in sys.modules, 'redis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_unknown_attribute_raises() -> None:
    """A typo gets an AttributeError, not a lazy-import crash."""
    try:
        lumasched.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each sorted."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_complete_and_sorted() -> None:
    """Every public name of the package is in __all__ (and nothing else), sorted
    (httpx's test_exported_members): a new import cannot leak out unnoticed."""
    public = {
        name
        for name, value in vars(lumasched).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    lazy = set(lumasched._LAZY)  # every public name loads on first use
    assert public | lazy == set(lumasched.__all__)
    assert lumasched.__all__ == sorted(lumasched.__all__, key=_isort_key)


def test_no_export_shadows_a_builtin() -> None:
    """`from lumasched import *` never replaces a builtin such as TimeoutError."""
    assert not set(lumasched.__all__) & set(dir(builtins))


def test_top_level_holds_the_users_types_not_plumbing() -> None:
    """The types in the common signatures are exported; 0.1's plumbing is not."""
    for name in ("Luma", "LumaSync", "generate_sync", "Settings", "Clock", "APITimeoutError"):
        assert name in lumasched.__all__, name
    for name in ("dumps_body", "safe_target", "sha256_file", "latency_key_for", "OrphanLease"):
        assert name not in lumasched.__all__, name


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("dumps_body", "lumasched.api"),
        ("safe_target", "lumasched.engine.downloads"),
        ("sha256_file", "lumasched.engine.downloads"),
        ("latency_key_for", "lumasched.engine.poller"),
        ("OrphanLease", "lumasched.limits"),
    ],
)
def test_moved_names_resolve_with_a_warning_naming_their_home(name: str, home: str) -> None:
    """0.1 code using a moved name still runs, and is told where the name lives now."""
    with pytest.warns(DeprecationWarning, match=home):
        value = getattr(lumasched, name)
    assert value is getattr(importlib.import_module(home), name)


def test_timeout_error_is_renamed_with_a_deprecated_alias() -> None:
    """lumasched.TimeoutError is now APITimeoutError (still a builtin TimeoutError)."""
    assert issubclass(lumasched.APITimeoutError, builtins.TimeoutError)
    with pytest.warns(DeprecationWarning, match="APITimeoutError"):
        assert lumasched.TimeoutError is lumasched.APITimeoutError  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="APITimeoutError"):
        from lumasched.errors import TimeoutError as old  # type: ignore[attr-defined]
    assert old is lumasched.APITimeoutError


def test_version_flag() -> None:
    """`lumasched --version` prints the package version."""
    out = subprocess.run(
        [sys.executable, "-m", "lumasched", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"lumasched {lumasched.__version__}"
