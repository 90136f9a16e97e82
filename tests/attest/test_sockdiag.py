"""E1 descriptor-table passes: what one pass reads, and when a shared pass may answer.

The pass runs over the real ``/proc`` (with real processes holding sockets) and over
a directory laid out like it (``<pid>/fd/<n>`` symlinks), which lets a test change
who holds what while a pass is held open. Holding a pass open wraps the real
:func:`scan_socket_holders` with an event; nothing else is replaced.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attest._sockdiag import (
    HolderScanner,
    judge_holders,
    scan_socket_holders,
    socket_link,
)
from attest.errors import CallerGone, CallerUnidentified

WAIT = 10.0  # generous bound on a wait that should end at once; never a timing assertion


def _hold(proc: Path, pid: int, fd: int, inode: int) -> None:
    """In the fake tree, let ``pid`` hold socket ``inode`` as descriptor ``fd``."""
    fd_dir = proc / str(pid) / "fd"
    fd_dir.mkdir(parents=True, exist_ok=True)
    (fd_dir / str(fd)).symlink_to(f"socket:[{inode}]")


def _release(proc: Path, pid: int, fd: int) -> None:
    (proc / str(pid) / "fd" / str(fd)).unlink()


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    _hold(root, 100, 3, 555)
    (root / "100" / "fd" / "0").symlink_to("/dev/null")
    (root / "100" / "fd" / "1").symlink_to("pipe:[77]")
    _hold(root, 200, 4, 666)
    (root / "self").mkdir()  # not a pid: skipped
    _hold(root / "self", 0, 9, 555)
    (root / "300").mkdir()  # a process without a readable table (a kernel thread)
    return root


def test_pass_maps_every_socket_to_its_holders(proc: Path) -> None:
    _hold(proc, 200, 7, 555)  # a second holder of 555
    _hold(proc, 100, 8, 555)  # and a second descriptor of it in 100
    found = scan_socket_holders(proc)
    assert sorted(found[socket_link(555)]) == [100, 100, 200]
    assert found[socket_link(666)] == [200]
    assert set(found) == {socket_link(555), socket_link(666)}  # pipes and files left out


def test_pass_without_a_process_list_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(CallerUnidentified):
        scan_socket_holders(tmp_path / "missing")
    with pytest.raises(CallerUnidentified):
        HolderScanner(tmp_path / "missing").holders(555, since=time.monotonic_ns())


def test_pass_over_the_real_proc_sees_another_process() -> None:
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        pass_fds=(theirs.fileno(),),
    )
    try:
        shared = os.fstat(theirs.fileno()).st_ino
        found = scan_socket_holders()
        assert sorted(found[socket_link(shared)]) == sorted([os.getpid(), child.pid])
        theirs.close()
        found = scan_socket_holders()
        assert found[socket_link(shared)] == [child.pid]
        assert found[socket_link(os.fstat(ours.fileno()).st_ino)] == [os.getpid()]
    finally:
        child.communicate(b"")
        ours.close()
        theirs.close()


def test_judge_holders() -> None:
    judge_holders([7], 7)
    judge_holders([7, 7], 7)  # two descriptors in the caller
    with pytest.raises(CallerUnidentified, match="shared"):
        judge_holders([7, 8], 7)
    with pytest.raises(CallerUnidentified, match="shared"):
        judge_holders([8], 7)
    with pytest.raises(CallerGone):
        judge_holders([], 7)


@dataclass
class HeldPass:
    """The real pass, held open after it read the tables until ``gate`` is set."""

    proc: Path
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    gate: threading.Event = field(default_factory=threading.Event)
    fail: bool = False
    runs: int = 0

    def __call__(self, proc: str | Path) -> dict[bytes, list[int]]:
        self.runs += 1
        found = scan_socket_holders(proc)
        self.entered.release()
        assert self.gate.wait(WAIT)
        if self.fail:
            raise CallerUnidentified("the pass failed")
        return found

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=WAIT)


@pytest.fixture
def held(proc: Path) -> HeldPass:
    return HeldPass(proc)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def _lookup(
    pool: ThreadPoolExecutor, scanner: HolderScanner, inode: int, since: int
) -> Future[tuple[int, ...]]:
    return pool.submit(scanner.holders, inode, since=since)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_pass_answers_no_lookup_that_came_after_it_started(
    proc: Path, held: HeldPass, pool: ThreadPoolExecutor
) -> None:
    """The rule that keeps sharing sound: a holder that appeared after pass 1 read the
    tables is seen by lookups made after that, because pass 1 may not answer them."""
    scanner = HolderScanner(proc, scan=held)
    first = _lookup(pool, scanner, 555, time.monotonic_ns())
    held.wait_entered()  # pass 1 has read the tables and is held open
    _hold(proc, 200, 9, 555)  # a borrower takes the socket
    later = [_lookup(pool, scanner, 555, time.monotonic_ns()) for _ in range(3)]
    _until(lambda: scanner.lookups == 4)
    held.gate.set()
    assert first.result(WAIT) == (100,)  # pass 1's view
    for lookup in later:
        assert sorted(lookup.result(WAIT)) == [100, 200]  # pass 2's view
    assert held.runs == scanner.passes == 2  # the three later lookups shared one pass


def test_a_finished_pass_answers_no_later_lookup(proc: Path, held: HeldPass) -> None:
    """Same rule for the pass kept after it ends (a re-check must read the tables again)."""
    scanner = HolderScanner(proc, scan=held)
    held.gate.set()
    assert scanner.holders(555, since=time.monotonic_ns()) == (100,)  # pass 1, done
    _hold(proc, 200, 9, 555)
    assert sorted(scanner.holders(555, since=time.monotonic_ns())) == [100, 200]  # pass 2
    assert scanner.passes == 2


def test_a_pass_answers_lookups_whose_connection_came_before_it(
    proc: Path, held: HeldPass, pool: ThreadPoolExecutor
) -> None:
    scanner = HolderScanner(proc, scan=held)
    accepted = time.monotonic_ns()  # connections accepted before any pass
    first = _lookup(pool, scanner, 555, accepted)
    held.wait_entered()
    _hold(proc, 200, 9, 555)  # after pass 1 read the tables: not in its answers
    joined = [_lookup(pool, scanner, inode, accepted) for inode in (555, 666, 777)]
    _until(lambda: scanner.lookups == 4)
    held.gate.set()
    assert first.result(WAIT) == (100,)
    assert [j.result(WAIT) for j in joined] == [(100,), (200,), ()]
    # Finished and still fresh enough for a connection accepted before it started.
    assert scanner.holders(666, since=accepted) == (200,)
    assert held.runs == scanner.passes == 1
    assert scanner.lookups == 5


def test_a_failed_pass_refuses_all_its_lookups_and_is_not_reused(
    proc: Path, held: HeldPass, pool: ThreadPoolExecutor
) -> None:
    scanner = HolderScanner(proc, scan=held)
    accepted = time.monotonic_ns()
    held.fail = True
    leader = _lookup(pool, scanner, 555, accepted)
    held.wait_entered()
    waiter = _lookup(pool, scanner, 666, accepted)
    _until(lambda: scanner.lookups == 2)
    held.gate.set()
    with pytest.raises(CallerUnidentified):
        leader.result(WAIT)
    with pytest.raises(CallerUnidentified):
        waiter.result(WAIT)
    held.fail = False
    assert scanner.holders(555, since=accepted) == (100,)  # a new pass, not the failed one
    assert scanner.passes == 2


def test_a_lookup_gives_up_when_its_pass_does_not_end(
    proc: Path, held: HeldPass, pool: ThreadPoolExecutor
) -> None:
    scanner = HolderScanner(proc, scan=held, wait_limit=0.05)
    leader = _lookup(pool, scanner, 555, time.monotonic_ns())
    held.wait_entered()
    try:
        with pytest.raises(CallerUnidentified, match="too long"):
            scanner.holders(555, since=time.monotonic_ns())
    finally:
        held.gate.set()
    assert leader.result(WAIT) == (100,)


def test_a_released_socket_is_not_held(proc: Path) -> None:
    scanner = HolderScanner(proc)
    assert scanner.holders(666, since=time.monotonic_ns()) == (200,)
    _release(proc, 200, 4)
    assert scanner.holders(666, since=time.monotonic_ns()) == ()
