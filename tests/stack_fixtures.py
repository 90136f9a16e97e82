"""Fixtures that start real components (anvil, SeaweedFS, swtpm) for a test.

Registered as a pytest plugin by tests/conftest.py. Every fixture is
function-scoped (pytest-trio fixtures live inside one test's trio.run) and
stops its component when the test ends, passed or failed. Logs go under the
test's tmp_path, so a failing test leaves them to read.

``leftover_processes()`` lists processes the launchers started that are still
alive; a session-scoped autouse fixture fails the run if any remain at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkeys.devstack import (
    Anvil,
    SeaweedFS,
    Swtpm,
    start_anvil,
    start_seaweedfs,
    start_swtpm,
    started_sessions,
)

TEST_BUCKET = "agentkeys-test"
COMPONENT_NAMES = frozenset({"anvil", "node", "weed", "swtpm"})


@dataclass(frozen=True)
class ProcessInfo:
    """One live process as /proc shows it."""

    pid: int
    ppid: int
    session: int
    state: str
    name: str


def _read_proc(pid: int) -> ProcessInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ..." - comm may contain spaces or ')'.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessInfo(pid, int(fields[1]), int(fields[3]), fields[0], name)


def live_processes() -> list[ProcessInfo]:
    """Every process currently listed in /proc."""
    infos = (_read_proc(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return [info for info in infos if info is not None]


def leftover_processes() -> list[ProcessInfo]:
    """Processes the launchers started (by session) or component children of this process.

    A zombie child of ours counts (a launcher did not reap what it started); a
    zombie already handed to another parent is dead and does not.
    """
    sessions = started_sessions()
    me = os.getpid()
    return [
        info
        for info in live_processes()
        if info.pid != me
        and (info.session in sessions or (info.ppid == me and info.name in COMPONENT_NAMES))
        and (info.state != "Z" or info.ppid == me)
    ]


def describe(processes: list[ProcessInfo]) -> str:
    return ", ".join(f"{p.name}[{p.pid}] state {p.state}" for p in processes)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_component_processes() -> Iterator[None]:
    """Fail the run if any component process outlives the tests that started it."""
    yield
    leftovers = leftover_processes()
    assert not leftovers, f"component processes left running: {describe(leftovers)}"


@pytest.fixture
async def anvil(tmp_path: Path) -> AsyncIterator[Anvil]:
    """anvil on its default hardfork (P-256 precompile at 0x100 present)."""
    async with start_anvil(run_dir=tmp_path / "anvil") as node:
        yield node


@pytest.fixture
async def anvil_prague(tmp_path: Path) -> AsyncIterator[Anvil]:
    """anvil with ``--hardfork prague`` (no P-256 precompile)."""
    async with start_anvil(hardfork="prague", run_dir=tmp_path / "anvil-prague") as node:
        yield node


@pytest.fixture
async def seaweedfs(tmp_path: Path) -> AsyncIterator[SeaweedFS]:
    """``weed mini`` with a random admin identity and the bucket ``agentkeys-test``."""
    async with start_seaweedfs(bucket=TEST_BUCKET, run_dir=tmp_path / "seaweedfs") as store:
        yield store


@pytest.fixture
async def swtpm(tmp_path: Path) -> AsyncIterator[Swtpm]:
    """A fresh swtpm; connect with ``swtpm.tcti``."""
    async with start_swtpm(run_dir=tmp_path / "swtpm") as tpm:
        yield tpm
