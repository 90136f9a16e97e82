"""agentkeys builds as a wheel that works where the checkout is not.

``python -m build`` makes the wheel; it is installed into a fresh virtual environment in a
temporary directory (the locked environment's third-party packages are made visible to it,
never this checkout or its editable install), and from there:

* ``agentkeys --version`` answers;
* the contracts' ABIs load (package data ``agentkeys._contracts``);
* the IAM policy documents render (package data ``agentkeys._aws``);
* the passkey page's static files are there;
* every module came from the installed wheel.

And pyproject.toml lists every package of the tree, so no subpackage is left out of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What a build must not see: caches, environments and what earlier builds left behind.
_NOT_SOURCES = (
    ".git", ".venv", "node_modules", "build", "dist", "*.egg-info", ".cache",
    "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".agentkeys-state",
)  # fmt: skip

_CHECK = """
import json, sys
from importlib import resources
import agentkeys, attest
from agentkeys.chain.artifacts import CONTRACT_NAMES, load_artifact
from agentkeys.worker.iam import render_all
abis = {name: len(load_artifact(name).abi.functions) for name in CONTRACT_NAMES}
values = {"bucket": "b", "account_id": "123456789012", "role_name": "R",
          "oidc_host": "broker.example.com", "audience": "a", "worker_function": "w",
          "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/broker.example.com"}
page = resources.files("agentkeys.passkey_page").joinpath("static", "page.html").read_bytes()
print(json.dumps({"abis": abis, "policies": sorted(render_all(values)),
                  "page": len(page), "files": [agentkeys.__file__, attest.__file__]}))
"""


def _tree_packages() -> set[str]:
    found = set()
    for package in ("agentkeys", "attest"):
        for init in (ROOT / package).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_pyproject_lists_every_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(setuptools["package-dir"])
    assert set(setuptools["packages"]) == _tree_packages() | mapped
    for package, directory in setuptools["package-dir"].items():
        assert (ROOT / directory / "__init__.py").is_file(), package


@pytest.mark.slow
def test_the_wheel_runs_outside_the_checkout(tmp_path: Path) -> None:
    # Build from a copy without build/ and *.egg-info: setuptools would reuse what an earlier
    # build left there and hide package data that pyproject.toml no longer declares.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("agentkeys-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The third-party packages of the locked environment, as a plain path entry: its .pth
    # files (the editable install of this checkout among them) are not processed.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz_locked_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    away = tmp_path / "elsewhere"
    away.mkdir()

    version = subprocess.run(
        [str(venv / "bin" / "agentkeys"), "--version"],
        cwd=away,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "0.1.0" in version.stdout + version.stderr

    checked = subprocess.run(
        [str(python), "-c", _CHECK], cwd=away, env=env, check=True, capture_output=True, text=True
    )
    found = json.loads(checked.stdout)
    assert set(found["abis"]) == {"SidecarRegistry", "ScopeContract", "K3EpochCounter"}
    assert all(count > 0 for count in found["abis"].values())
    assert "actor-role-policy" in found["policies"]
    assert len(found["policies"]) == 6
    assert found["page"] > 0
    for file in found["files"]:
        assert Path(file).is_relative_to(venv), file
