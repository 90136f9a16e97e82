"""The package map: top-level packages import one way, and production leaves the dev tooling out.

The checkout's top-level Python packages (``agentkeys``, ``attest``, ``bench``, ``contracts``,
``deploy``, ``tests``) depend on each other in one direction only:

* no two of them import each other, directly or round a longer loop (every import counts:
  module level, inside functions, under ``TYPE_CHECKING``);
* ``attest`` (caller and device attestation) imports nothing of ``agentkeys``: agentkeys
  builds on attest, never the reverse;
* the production packages (``agentkeys``, ``attest``) import neither the benchmarks nor the
  tests nor the build scripts.

``python -m tests.core.test_package_map`` prints which package imports which (the number
of import statements).

``agentkeys.devstack`` holds everything that exists only to develop and test agentkeys: the
launchers of real components, ``dev up``, the demo, the SMTP sink and the soft
authenticator. Production code (the services, the daemon, the chain client, the CLI's
operator commands) must run where none of it is installed or trusted, so:

* no production module imports ``agentkeys.devstack`` at module level; the only modules
  that may are the dev tooling itself and the ``agentkeys dev`` command group;
* importing every production module outside the CLI leaves ``agentkeys.devstack`` unloaded
  (checked in a fresh interpreter, so lazy imports that run at import time are caught).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The checkout's top-level directories that hold Python code (contracts/ and deploy/ hold
#: build scripts and the package data installed as ``agentkeys._contracts`` / ``._aws``).
TOP_LEVEL = ("agentkeys", "attest", "bench", "contracts", "deploy", "tests")
PRODUCTION = ("agentkeys", "attest")
_NOT_CODE = frozenset({"node_modules", "build", "dist", "__pycache__"})
DEV_TOOLING = "agentkeys.devstack"
#: Modules that are development tooling by design (the ``agentkeys dev`` group).
DEV_ENTRY_POINTS = frozenset({"agentkeys.cli.dev"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _production_modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("agentkeys", "attest"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = _module_name(path)
            if name == DEV_TOOLING or name.startswith(DEV_TOOLING + "."):
                continue
            if name in DEV_ENTRY_POINTS or name.endswith("__main__"):
                continue
            found.append((name, path))
    return found


def _top_level_imports(tree: ast.Module) -> set[str]:
    """Modules a file imports when it is imported (module level, ``if`` and ``try`` included)."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If):
            is_type_checking = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            if not is_type_checking:
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
    return names


def test_no_production_module_imports_the_dev_tooling() -> None:
    offenders = {}
    for name, path in _production_modules():
        imported = _top_level_imports(ast.parse(path.read_text(encoding="utf-8")))
        dev = sorted(m for m in imported if m == DEV_TOOLING or m.startswith(DEV_TOOLING + "."))
        if dev:
            offenders[name] = dev
    assert offenders == {}


def test_the_scan_sees_an_import_of_the_dev_tooling() -> None:
    tree = ast.parse(
        "import os\n"
        "from agentkeys.devstack.up import main\n"
        "if TYPE_CHECKING:\n    from agentkeys.devstack import softauthn\n"
        "def f() -> None:\n    from agentkeys.devstack import demo\n"
    )
    assert _top_level_imports(tree) == {
        "os",
        "agentkeys.devstack.up",
        "agentkeys.devstack.up.main",
    }


def test_importing_the_services_and_the_daemon_leaves_the_dev_tooling_unloaded() -> None:
    modules = [name for name, _ in _production_modules() if not name.startswith("agentkeys.cli")]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({DEV_TOOLING!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


# -- which top-level package imports which ------------------------------------------------------


def _every_import(tree: ast.AST) -> Iterator[str]:
    """Every absolute import in ``tree``, wherever it stands (functions, TYPE_CHECKING, try)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if not _NOT_CODE.intersection(p.parts))


def import_map() -> dict[str, Counter[str]]:
    """For each top-level package, the other top-level packages it imports (statement counts)."""
    found: dict[str, Counter[str]] = {}
    for package in TOP_LEVEL:
        counts: Counter[str] = Counter()
        for path in _python_files(package):
            for name in _every_import(ast.parse(path.read_text(encoding="utf-8"))):
                top = name.split(".")[0]
                if top in TOP_LEVEL and top != package:
                    counts[top] += 1
        found[package] = counts
    return found


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A loop in the directed graph ``edges`` (as the list of its nodes), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(edges.get(node, ())):
            loop = visit(target, [*path, node])
            if loop is not None:
                return loop
        done.add(node)
        return None

    for start in sorted(edges):
        loop = visit(start, [])
        if loop is not None:
            return loop
    return None


def test_every_top_level_directory_with_code_is_mapped() -> None:
    with_code = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in _NOT_CODE
        and not p.name.endswith(".egg-info")
        and _python_files(p.name)
    }
    assert with_code == set(TOP_LEVEL)


def test_no_two_top_level_packages_import_each_other() -> None:
    edges = {package: set(counts) for package, counts in import_map().items()}
    assert _cycle(edges) is None


def test_attest_imports_nothing_of_agentkeys() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files("attest")
        for name in _every_import(ast.parse(path.read_text(encoding="utf-8")))
        if name.split(".")[0] == "agentkeys"
    )
    assert offenders == []


def test_production_imports_no_bench_tests_or_build_scripts() -> None:
    found = import_map()
    leaks = {p: sorted(set(found[p]) - set(PRODUCTION)) for p in PRODUCTION}
    assert leaks == {p: [] for p in PRODUCTION}


def test_the_map_sees_every_kind_of_import_and_every_loop() -> None:
    tree = ast.parse(
        "import attest.serve as s\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    from agentkeys.errors import AgentkeysError\n"
        "def f() -> None:\n    from bench import _run\n"
        "try:\n    import tests.core\nexcept ImportError:\n    pass\n"
    )
    assert sorted(_every_import(tree)) == [
        "agentkeys.errors",
        "attest.serve",
        "bench",
        "tests.core",
    ]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _format(found: dict[str, Counter[str]]) -> str:
    width = max(map(len, TOP_LEVEL))
    lines = [f"{'package':<{width}}  imports (import statements)"]
    for package, counts in found.items():
        imported = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())) or "-"
        lines.append(f"{package:<{width}}  {imported}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_format(import_map()))
