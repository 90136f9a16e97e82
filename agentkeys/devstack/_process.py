"""Starting a component process, waiting for it, and always stopping it.

Every component runs in its own session (``start_new_session``), so the whole
process group (for example the Node wrapper around anvil and anvil itself) can
be signalled at once. Stopping is: SIGTERM to the group, wait up to a grace
period, then SIGKILL to the group, and wait again. It runs under a shielded
cancel scope, so it also happens when the body raised, was cancelled, or
Ctrl-C (KeyboardInterrupt) unwound the stack.

Output of a component goes to a log file (mode 0600) in the run directory,
never to the terminal; a failed start raises with the tail of that log.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

import trio

from agentkeys.devstack.errors import ComponentStartFailed

_TAIL_LINES = 40
_TAIL_BYTES = 16384
_PROBE_INTERVAL = 0.05
_PORT_CLASH = "address already in use"

# Session ids (= leader pids) of every component started by this interpreter,
# kept so a test run can check that none of them is left running.
_started_sessions: set[int] = set()

P = TypeVar("P")


def started_sessions() -> frozenset[int]:
    """Session ids of all component processes this interpreter has started."""
    return frozenset(_started_sessions)


def log_tail(path: Path, *, start: int = 0, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` from byte offset ``start`` ('' if unreadable)."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(start, size - _TAIL_BYTES))
            data = log.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid`` (from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")  # comm: any bytes
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


async def _wait_group_gone(pgid: int) -> None:
    # Polling: /proc offers no event for "a process in another's group exited".
    while group_members(pgid):  # noqa: ASYNC110
        await trio.sleep(_PROBE_INTERVAL)


async def stop_process(
    process: trio.Process, *, grace: float, stop_signal: signal.Signals = signal.SIGTERM
) -> None:
    """Stop the whole process group of ``process`` and reap its leader.

    ``stop_signal`` (SIGTERM unless the component wants another, e.g. PostgreSQL's
    "fast shutdown" SIGINT) to the group; wait up to ``grace`` seconds for the leader
    and every other member (e.g. the native anvil under its Node wrapper) to exit;
    then SIGKILL whatever is left and wait for it to be gone. Runs shielded, so a
    surrounding cancellation cannot skip it.
    """
    pgid = process.pid
    with trio.CancelScope(shield=True):
        if process.returncode is None or group_members(pgid):
            _signal_group(pgid, stop_signal)
            with trio.move_on_after(grace):
                await process.wait()
                await _wait_group_gone(pgid)
            _signal_group(pgid, signal.SIGKILL)
        await process.wait()
        with trio.move_on_after(grace):
            await _wait_group_gone(pgid)


@dataclass(frozen=True)
class RunAs:
    """An unprivileged identity to run a component under (root only can switch to it)."""

    uid: int
    gid: int


@asynccontextmanager
async def supervised_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    grace: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    run_as: RunAs | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[trio.Process]:
    """Run ``argv`` in its own session with output appended to ``log_path``; stop it on exit.

    ``run_as``: start it under another uid/gid (no supplementary groups); needs root.
    The caller owns nothing to close: leaving the block stops the process group
    (see ``stop_process``) however the block is left.
    """
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"--- agentkeys devstack: starting {' '.join(argv)}\n".encode())
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=run_as.uid if run_as is not None else None,
            group=run_as.gid if run_as is not None else None,
            extra_groups=[] if run_as is not None else None,
        )
    finally:
        os.close(fd)
    _started_sessions.add(process.pid)
    try:
        yield process
    finally:
        await stop_process(process, grace=grace, stop_signal=stop_signal)


@dataclass(frozen=True)
class LaunchPlan(Generic[P]):
    """One attempt at starting a component: its ports (or other choices) and command."""

    ports: P
    argv: tuple[str, ...]


class _ExitedEarly(Exception):
    """Internal: the process ended before it was ready (never escapes ``launch``)."""

    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode


async def _wait_ready(process: trio.Process, probe: Callable[[], Awaitable[bool]]) -> None:
    while True:
        if process.returncode is not None:
            raise _ExitedEarly(process.returncode)
        if await probe():
            return
        await trio.sleep(_PROBE_INTERVAL)


@asynccontextmanager
async def launch(
    name: str,
    *,
    plan: Callable[[], LaunchPlan[P]],
    ready: Callable[[P], Awaitable[bool]],
    log_path: Path,
    startup_timeout: float,
    grace: float,
    attempts: int,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    run_as: RunAs | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[tuple[P, trio.Process]]:
    """Start a component, wait until ``ready(ports)`` is true, yield, and always stop it.

    ``plan`` is called once per attempt (fresh ports each time). An attempt whose
    process exits with "address already in use" in its log is retried, up to
    ``attempts`` in all: a port probe can lose a race against other processes.

    Raises:
        ComponentStartFailed: the process exited early (other reasons, or out of
            attempts) or was not ready within ``startup_timeout`` seconds; the
            reason carries the tail of the component's log.
    """
    for attempt in range(1, attempts + 1):
        launch_plan = plan()
        offset = _size(log_path)
        async with supervised_process(
            launch_plan.argv,
            log_path=log_path,
            grace=grace,
            env=env,
            cwd=cwd,
            run_as=run_as,
            stop_signal=stop_signal,
        ) as process:
            try:
                with trio.fail_after(startup_timeout):
                    await _wait_ready(process, partial(ready, launch_plan.ports))
            except _ExitedEarly as exc:
                tail = log_tail(log_path, start=offset)
                if attempt < attempts and _PORT_CLASH in tail.lower():
                    continue
                raise ComponentStartFailed(
                    f"{name} exited with status {exc.returncode} during startup "
                    f"(log {log_path}):\n{tail}"
                ) from None
            except trio.TooSlowError:
                tail = log_tail(log_path, start=offset)
                raise ComponentStartFailed(
                    f"{name} was not ready within {startup_timeout:g} s (log {log_path}):\n{tail}"
                ) from None
            yield launch_plan.ports, process
            return
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
