"""Launchers stop everything they start: normal exit, exception, cancellation, Ctrl-C."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from agentkeys.devstack import (
    start_anvil,
    start_postgres,
    start_seaweedfs,
    start_swtpm,
    started_sessions,
)
from agentkeys.devstack._process import group_members
from tests.stack_fixtures import leftover_processes, live_processes

Launcher = Callable[[Path], AbstractAsyncContextManager[Any]]

LAUNCHERS: dict[str, Launcher] = {
    "anvil": lambda run: start_anvil(run_dir=run),
    "seaweedfs": lambda run: start_seaweedfs(bucket="agentkeys-test", run_dir=run),
    "swtpm": lambda run: start_swtpm(run_dir=run),
    "postgres": lambda run: start_postgres(run_dir=run),
}


class BodyFailed(Exception):
    pass


def session_members(session: int) -> list[str]:
    return [
        f"{p.name}[{p.pid}]" for p in live_processes() if p.session == session and p.state != "Z"
    ]


def assert_stopped(session: int) -> None:
    assert session_members(session) == []
    assert [p for p in leftover_processes() if p.session == session] == []


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request: pytest.FixtureRequest) -> Launcher:
    return LAUNCHERS[request.param]


async def test_normal_exit_stops_the_process_group(launcher: Launcher, tmp_path: Path) -> None:
    async with launcher(tmp_path) as component:
        session = component.pid
        assert session in started_sessions()
        assert session_members(session)  # running
    assert_stopped(session)


async def test_exception_in_body_stops_it(launcher: Launcher, tmp_path: Path) -> None:
    sessions: list[int] = []

    async def body() -> None:
        async with launcher(tmp_path) as component:
            sessions.append(component.pid)
            raise BodyFailed

    with pytest.raises(BodyFailed):
        await body()
    assert_stopped(sessions[0])


async def test_cancellation_stops_it(launcher: Launcher, tmp_path: Path) -> None:
    with trio.CancelScope() as scope:
        async with launcher(tmp_path) as component:
            session = component.pid
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert_stopped(session)


async def test_cancellation_during_startup_stops_it(launcher: Launcher, tmp_path: Path) -> None:
    before = started_sessions()

    async def run() -> None:
        async with launcher(tmp_path):
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(20):  # a hang guard, not a timer
            while started_sessions() == before:  # noqa: ASYNC110 - no event for "spawned"
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    (session,) = started_sessions() - before
    assert_stopped(session)


async def test_keyboard_interrupt_stops_it(tmp_path: Path) -> None:
    # Ctrl-C arrives in a Trio program as KeyboardInterrupt raised in the body.
    sessions: list[int] = []

    async def body() -> None:
        async with start_swtpm(run_dir=tmp_path) as tpm:
            sessions.append(tpm.pid)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await body()
    assert_stopped(sessions[0])


def test_no_component_process_is_left_from_earlier_tests() -> None:
    assert leftover_processes() == []


def test_a_process_whose_name_is_not_utf8_does_not_break_the_group_scan(tmp_path: Path) -> None:
    """Any process on the machine may have a non-UTF-8 name; the scan reads past it."""
    link = os.path.join(os.fsencode(tmp_path), b"\xffsleeper")
    os.symlink(b"/bin/sleep", link)
    child = subprocess.Popen([link, "30"], start_new_session=True)
    try:
        assert group_members(child.pid) == [child.pid]
    finally:
        child.kill()
        child.wait()
