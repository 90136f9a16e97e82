"""Run the scenarios of a profile in order and collect one report.

A scenario that raises does not hide the others: it contributes one row saying
what failed, and :attr:`Report.failed` lists it (``python -m bench`` then exits 1).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import trio

from bench import attestation, broker, chain, cli, crypto, daemon, http, worker
from bench._errors import BenchConfigError
from bench._model import Row, link_baselines
from bench._profile import Profile

__all__ = ["SCENARIOS", "Report", "run_all"]

SCENARIOS = ("cli", "crypto", "attest", "http", "chain", "broker", "worker", "daemon")
_PACKAGES = ("trio", "hypercorn", "quart-trio", "cryptography", "httpx")


@dataclass(frozen=True)
class Report:
    """Everything one run produced."""

    rows: list[Row]
    meta: dict[str, Any]
    failed: list[str]


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", os.fspath(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _loadavg() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def _runner(name: str, profile: Profile, build_dir: Path) -> Callable[[], Awaitable[list[Row]]]:
    if name == "cli":
        return lambda: cli.run(profile)
    if name == "crypto":
        return lambda: crypto.run(profile)
    if name == "attest":
        return lambda: attestation.run(profile)
    if name == "http":
        return lambda: http.run(profile, build_dir=build_dir)
    if name == "chain":
        return lambda: chain.run(profile)
    if name == "broker":
        return lambda: broker.run(profile, build_dir=build_dir)
    if name == "worker":
        return lambda: worker.run(profile, build_dir=build_dir)
    if name == "daemon":
        return lambda: daemon.run(profile, build_dir=build_dir)
    raise BenchConfigError(f"unknown scenario {name}")


async def run_all(
    profile: Profile,
    *,
    only: Sequence[str] = SCENARIOS,
    build_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run the named scenarios (in :data:`SCENARIOS` order) under ``profile``.

    Raises:
        BenchConfigError: a name not in :data:`SCENARIOS`.
    """
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        raise BenchConfigError(f"unknown scenarios: {', '.join(unknown)}")
    started = dt.datetime.now(dt.UTC)
    meta: dict[str, Any] = {
        "profile": profile.name,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg_before": _loadavg(),
        "platform": platform.platform(),
        "versions": _versions(),
        "executable": sys.executable,
        "scenario_seconds": {},
    }
    rows: list[Row] = []
    failed: list[str] = []
    begin = time.perf_counter()
    for name in SCENARIOS:
        if name not in only:
            continue
        if progress is not None:
            progress(name)
        t0 = time.perf_counter()
        try:
            rows.extend(await _runner(name, profile, build_dir)())
        except Exception as exc:
            failed.append(name)
            reason = f"failed: {type(exc).__name__}: {exc}"[:300]
            rows.append(Row(name, "error", f"{name} scenario", None, notes=reason))
        meta["scenario_seconds"][name] = round(time.perf_counter() - t0, 2)
    meta["duration_s"] = round(time.perf_counter() - begin, 2)
    meta["loadavg_after"] = _loadavg()
    return Report(rows=link_baselines(rows), meta=meta, failed=failed)


def run_sync(profile: Profile, **kwargs: Any) -> Report:
    """:func:`run_all` in a fresh Trio run."""
    result: Report = trio.run(lambda: run_all(profile, **kwargs))
    return result
