"""The public surface: every name in lumasched.__all__ exists, and nothing private leaks."""

from __future__ import annotations

import inspect
import subprocess
import sys

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
