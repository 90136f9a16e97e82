"""The package map: production modules do not load the development tooling.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
