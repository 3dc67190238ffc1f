"""The layers of docs/architecture.md hold: data flows one way, no import cycle,
only cli/ prints."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lumasched

PACKAGE = Path(lumasched.__file__).parent

# Lowest first: a module may import its own layer and the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("errors", "_config", "_clock", "_background")),
    ("api", ("api", "pricing")),
    ("limits", ("limits",)),
    ("store", ("store",)),
    ("inputs", ("inputs",)),
    ("engine", ("engine",)),
    ("manifest", ("manifest",)),
    ("claims", ("claims",)),
    ("gallery", ("gallery",)),
    ("observe", ("observe",)),
    ("facade", ("facade",)),
    ("web", ("web",)),
    ("cli", ("cli",)),
)
# Apart from the stack: the emulator serves the wire and enforces limits.
EMULATOR_MAY_IMPORT = ("base", "api", "limits")
# The emulator's command prints, so it lives in cli/; these two only hand over to it.
ENTRY_POINTS = {
    ("lumasched.emulator", "lumasched.cli._emulator"),
    ("lumasched.emulator.__main__", "lumasched.cli._emulator"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, tree: ast.AST | None = None) -> set[str]:
    """Every lumasched module ``name`` imports, lazily or not, type-only included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree or ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    known = _modules()
    return {m for m in out if m in known and m != name}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for layer, tops in LAYERS:
        if parts[1] in tops:
            return layer
    return parts[1]


ORDER = [layer for layer, _ in LAYERS]


def test_lower_layers_never_import_higher_ones() -> None:
    """Each module imports only its own layer and the ones below it."""
    wrong = []
    for name, path in _modules().items():
        mine = _layer(name)
        for dep in _imports(name, path):
            theirs = _layer(dep)
            if mine == "cli" and theirs == "emulator":
                ok = True  # ``lumasched emulator`` and ``run --emulator`` serve it
            elif mine in ORDER:
                ok = theirs in ORDER and ORDER.index(theirs) <= ORDER.index(mine)
            elif mine == "emulator":
                ok = theirs in (*EMULATOR_MAY_IMPORT, "emulator") or (name, dep) in ENTRY_POINTS
            else:  # the facade, the old-path aliases, testing.py, __main__: on top
                ok = True
            if not ok:
                wrong.append(f"{name} ({mine}) imports {dep} ({theirs})")
    assert not wrong, "\n".join(wrong)


def _eager_imports(name: str, path: Path) -> set[str]:
    """The lumasched modules ``name`` imports while it is itself being imported:
    module-level statements, not function bodies nor ``if TYPE_CHECKING:``."""
    body: list[ast.stmt] = []
    pending = list(ast.parse(path.read_text(), str(path)).body)
    while pending:
        stmt = pending.pop()
        if isinstance(stmt, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(stmt.test):
                pending.extend(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            pending.extend(stmt.body + stmt.orelse + stmt.finalbody)
            for handler in stmt.handlers:
                pending.extend(handler.body)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            body.append(stmt)
    module = ast.Module(body=body, type_ignores=[])
    return _imports(name, path, module)


def test_no_import_cycle() -> None:
    """No chain of module-level imports leads back to where it started."""
    modules = _modules()
    graph = {name: _eager_imports(name, path) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, chain: list[str]) -> None:
        if name in chain:
            cycle = [*chain[chain.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*chain, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_import_alone_in_a_fresh_interpreter() -> None:
    """Every package of the stack imports first in a fresh interpreter."""
    names = [f"lumasched.{top}" for _, tops in LAYERS for top in tops]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'lumasched']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_only_the_cli_prints() -> None:
    """No module outside cli/ calls print() or writes to sys.stdout / sys.stderr."""
    printing = []
    for name, path in _modules().items():
        if _layer(name) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{name}:{node.lineno}: print()")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("stdout", "stderr")
                and getattr(node.value, "id", None) == "sys"
            ):
                printing.append(f"{name}:{node.lineno}: sys.{node.attr}")
    assert not printing, "\n".join(printing)


OLD_HOMES = {
    "lumasched.callbacks": "lumasched.engine.callbacks",
    "lumasched.downloads": "lumasched.engine.downloads",
    "lumasched.events": "lumasched.engine.events",
    "lumasched.jobs": "lumasched.engine.jobs",
    "lumasched.journal": "lumasched.store.journal",
    "lumasched.poller": "lumasched.engine.poller",
    "lumasched.redis_limiter": "lumasched.limits.redis",
    "lumasched.scheduler": "lumasched.engine.scheduler",
}


def test_old_import_paths_still_work() -> None:
    """Every public module of 0.1.0 still offers its public names, the same objects."""
    import importlib

    for old, new in OLD_HOMES.items():
        before, now = importlib.import_module(old), importlib.import_module(new)
        assert before.__all__ == now.__all__, old
        for name in now.__all__:
            assert getattr(before, name) is getattr(now, name), (old, name)
