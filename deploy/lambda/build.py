#!/usr/bin/env python3
"""Build the worker's AWS Lambda deployment zip (handler ``agentkeys.worker.lambda_handler``).

    python deploy/lambda/build.py --out dist/agentkeys-worker-lambda.zip

The zip holds, at its root:

* ``agentkeys/`` and ``attest/`` from this checkout (Python sources, ``py.typed``; no
  caches): the wheel's two packages, since agentkeys builds on attest (its error root, the
  K10 point, ``device_key_hash`` and signature rule);
* the package data as an installed wheel lays it out (pyproject.toml ``package-dir``):
  ``contracts/artifacts`` as ``agentkeys/_contracts/`` (the ABIs ``agentkeys.chain`` loads)
  and ``deploy/aws`` as ``agentkeys/_aws/`` (the policy documents);
* every distribution named in ``deploy/lambda/requirements.txt`` and, transitively, what
  their metadata requires (extras excluded), copied file by file with their ``.dist-info``
  from the interpreter running this script - the project's locked ``.venv``. Build it on
  the Lambda architecture (Linux x86_64, CPython 3.11) so compiled wheels match.

The archive is reproducible: sorted entries, fixed timestamps and permissions. Nothing is
downloaded. Run the function with the Python 3.11 runtime, handler
``agentkeys.worker.lambda_handler``, and ``AGENTKEYS_WORKER_CONFIG`` naming the worker's
TOML configuration (see docs/worker.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
_SKIP_PARTS = frozenset({"__pycache__"})
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _roots(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            names.append(text)
    return names


def _requirement_name(requirement: str) -> str | None:
    """The distribution a ``Requires-Dist`` line needs, or None when it is extra-only."""
    spec, _, marker = requirement.partition(";")
    if "extra" in marker:
        return None
    if marker.strip():
        from packaging.markers import Marker

        if not Marker(marker.strip()).evaluate():
            return None
    match = _NAME.match(spec.strip())
    return match.group(1) if match else None


def closure(roots: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need, transitively (sorted by name).

    Raises:
        SystemExit: a needed distribution is not installed.
    """
    seen: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        name = _canonical(pending.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"build.py: {name} is not installed in {sys.prefix}") from None
        seen[name] = dist
        for requirement in dist.requires or []:
            needed = _requirement_name(requirement)
            if needed is not None:
                pending.append(needed)
    return [seen[n] for n in sorted(seen)]


def _distribution_files(dist: metadata.Distribution) -> Iterator[tuple[str, Path]]:
    for file in dist.files or []:
        relative = str(file)
        if relative.startswith("..") or any(p in _SKIP_PARTS for p in Path(relative).parts):
            continue  # console scripts outside site-packages, caches
        if relative.endswith(".pyc"):
            continue
        source = Path(str(file.locate()))
        if source.is_file():
            yield relative, source


def _tree(
    root: Path, prefix: str, suffixes: tuple[str, ...] | None = None
) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(p in _SKIP_PARTS for p in path.parts):
            continue
        if path.suffix == ".pyc" or (suffixes is not None and path.suffix not in suffixes):
            continue
        yield f"{prefix}/{path.relative_to(root).as_posix()}", path


def entries() -> dict[str, Path]:
    """Archive name → source file for everything the zip holds."""
    found: dict[str, Path] = {}
    for dist in closure(_roots(REQUIREMENTS)):
        if _canonical(dist.metadata["Name"]) == "agentkeys":
            continue
        for name, source in _distribution_files(dist):
            found.setdefault(name, source)
    for package in ("agentkeys", "attest"):
        found.update(_tree(REPO / package, package))
    for package, directory in (("_contracts", "contracts/artifacts"), ("_aws", "deploy/aws")):
        found.update(_tree(REPO / directory, f"agentkeys/{package}", (".json",)))
        found[f"agentkeys/{package}/__init__.py"] = REPO / directory / "__init__.py"
    return found


def build(out: Path, *, compress: bool = True) -> int:
    """Write the zip; returns the number of entries."""
    files = entries()
    out.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    partial = out.with_suffix(out.suffix + ".partial")
    level = 6 if compress else None
    with zipfile.ZipFile(partial, "w", compression=method, compresslevel=level) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name].read_bytes())
    partial.replace(out)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "agentkeys-worker-lambda.zip")
    parser.add_argument("--store", action="store_true", help="no compression (fast, for tests)")
    options = parser.parse_args(argv)
    count = build(options.out, compress=not options.store)
    print(f"{options.out}: {count} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
