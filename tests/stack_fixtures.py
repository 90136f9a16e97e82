"""Fixtures that start real components (anvil, SeaweedFS, swtpm, PostgreSQL) for a test.

Registered as a pytest plugin by tests/conftest.py. The anvil, SeaweedFS and swtpm
fixtures are function-scoped (pytest-trio fixtures live inside one test's trio.run) and
stop their component when the test ends, passed or failed. Logs go under the
test's tmp_path, so a failing test leaves them to read.

PostgreSQL is started once per session (``postgres``): its launcher runs in a thread with
a Trio loop of its own (:func:`held_in_thread`), and each test gets a fresh database on it
(``postgres_database``), dropped afterwards.

``leftover_processes()`` lists processes the launchers started that are still
alive; a session-scoped autouse fixture fails the run if any remain at the end.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from agentkeys.devstack import (
    Anvil,
    Postgres,
    SeaweedFS,
    Swtpm,
    start_anvil,
    start_postgres,
    start_seaweedfs,
    start_swtpm,
    started_sessions,
)

TEST_BUCKET = "agentkeys-test"
COMPONENT_NAMES = frozenset({"anvil", "node", "weed", "swtpm", "postgres"})
T = TypeVar("T")


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
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")  # comm: any bytes
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


# Sessions of components that :func:`held_in_thread` keeps running on purpose (session-wide
# servers): not leftovers while held.
_held_sessions: set[int] = set()


def leftover_processes() -> list[ProcessInfo]:
    """Processes the launchers started (by session) or component children of this process.

    A zombie child of ours counts (a launcher did not reap what it started); a
    zombie already handed to another parent is dead and does not. Components held for
    the whole session (:func:`held_in_thread`) count once they are released.
    """
    sessions = started_sessions() - _held_sessions
    me = os.getpid()
    return [
        info
        for info in live_processes()
        if info.pid != me
        and info.session not in _held_sessions
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


@contextmanager
def held_in_thread(
    open_component: Callable[[], AbstractAsyncContextManager[T]], *, timeout: float = 120.0
) -> Iterator[T]:
    """Enter ``open_component()`` in a thread running its own ``trio.run``; exit it at the end.

    For components shared by many tests (session or module scope), which a test's own
    Trio loop cannot hold. The launcher's cleanup runs when the block ends, however it ends.
    """
    started: queue.Queue[tuple[bool, object]] = queue.Queue()
    release = threading.Event()

    async def hold() -> None:
        try:
            async with open_component() as component:
                started.put((True, component))
                await trio.to_thread.run_sync(release.wait)
        except BaseException as exc:
            started.put((False, exc))

    thread = threading.Thread(target=trio.run, args=(hold,), name="held-component", daemon=True)
    thread.start()
    session = None
    try:
        ok, value = started.get(timeout=timeout)
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        session = getattr(value, "pid", None)
        if isinstance(session, int):
            _held_sessions.add(session)
        yield value  # type: ignore[misc]
    finally:
        release.set()
        thread.join(timeout)
        _held_sessions.discard(session)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One PostgreSQL server for the whole session (superuser ``postgres.user``)."""
    run_dir = tmp_path_factory.mktemp("postgres")
    with held_in_thread(lambda: start_postgres(run_dir=run_dir)) as server:
        yield server


@pytest.fixture
async def postgres_database(postgres: Postgres) -> AsyncIterator[str]:
    """A fresh database on the session's server: its DSN (password ``postgres.password``)."""
    name = f"t_{secrets.token_hex(6)}"
    dsn = await postgres.create_database(name)
    yield dsn
    await postgres.drop_database(name)
