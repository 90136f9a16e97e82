"""E1 core: peer credentials, executable digests and pid-reuse refusal, with real processes."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from attest._sockdiag import HolderScanner
from attest.errors import CallerGone, CallerUnidentified
from attest.peercred import (
    ExeHashCache,
    boot_ticks_now,
    check_sole_holder,
    identify_unix_peer,
    parse_stat_start_time,
    read_peercred,
)

CONNECT_AND_WAIT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.connect(sys.argv[1])\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(8)
    yield sock, path
    sock.close()


def _connect_child(path: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CONNECT_AND_WAIT, path], stdin=subprocess.PIPE)


def _take_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """Start a process that gets exactly ``pid`` (via ns_last_pid), or None if raced."""
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "60"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_identifies_a_live_caller(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    child = _connect_child(path)
    conn, _ = sock.accept()
    try:
        for use_pidfd in (True, False):
            ident = identify_unix_peer(
                conn, cache=ExeHashCache(), accepted_at=boot_ticks_now(), use_pidfd=use_pidfd
            )
            exe = os.path.realpath(sys.executable)
            assert ident.pid == child.pid
            assert (ident.uid, ident.gid) == (os.getuid(), os.getgid())
            assert ident.exe_path == exe
            assert ident.exe_sha256 == hashlib.sha256(Path(exe).read_bytes()).hexdigest()
            assert ident.pidfd_checked is use_pidfd
    finally:
        child.communicate(b"")
        conn.close()


@pytest.mark.parametrize("use_pidfd", [True, False])
def test_exited_caller_is_refused(listener: tuple[socket.socket, str], use_pidfd: bool) -> None:
    sock, path = listener
    child = _connect_child(path)
    conn, _ = sock.accept()
    child.communicate(b"")
    try:
        with pytest.raises(CallerGone):
            identify_unix_peer(
                conn, cache=ExeHashCache(), accepted_at=boot_ticks_now(), use_pidfd=use_pidfd
            )
    finally:
        conn.close()


def test_reused_pid_is_refused_with_pidfd(listener: tuple[socket.socket, str]) -> None:
    """The caller exits, its pid goes to another process, then the lookup happens."""
    sock, path = listener
    child = _connect_child(path)
    conn, _ = sock.accept()
    assert read_peercred(conn).pid == child.pid
    child.communicate(b"")
    impostor = _take_pid(child.pid)
    if impostor is None:
        pytest.skip("another process took the pid first (busy machine)")
    try:
        assert read_peercred(conn).pid == impostor.pid  # the naive lookup would see the impostor
        with pytest.raises(CallerGone):
            identify_unix_peer(conn, cache=ExeHashCache(), accepted_at=boot_ticks_now())
    finally:
        impostor.kill()
        impostor.wait()
        conn.close()


def test_reused_pid_is_refused_by_start_time_fallback(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    child = _connect_child(path)
    conn, _ = sock.accept()
    accepted_at = boot_ticks_now()
    child.communicate(b"")
    time.sleep(2 / os.sysconf("SC_CLK_TCK"))  # let the tick clock pass the accept time
    impostor = _take_pid(child.pid)
    if impostor is None:
        pytest.skip("another process took the pid first (busy machine)")
    try:
        with pytest.raises(CallerGone, match="started after"):
            identify_unix_peer(conn, cache=ExeHashCache(), accepted_at=accepted_at, use_pidfd=False)
    finally:
        impostor.kill()
        impostor.wait()
        conn.close()


def test_not_a_unix_socket_is_unidentified() -> None:
    with socket.socket(socket.AF_INET) as s, pytest.raises(CallerUnidentified):
        identify_unix_peer(s, cache=ExeHashCache(), accepted_at=boot_ticks_now())


def test_stat_start_time_parser() -> None:
    line = "42 (a (weird) name) S " + " ".join(str(n) for n in range(4, 30))
    assert parse_stat_start_time(line) == 22
    with pytest.raises(CallerUnidentified):
        parse_stat_start_time("42 (short) S 1 2")
    with pytest.raises(CallerUnidentified):
        parse_stat_start_time("42 (x) S " + " ".join(["z"] * 30))


def test_exe_cache_is_bounded_and_sees_changes(tmp_path: Path) -> None:
    cache = ExeHashCache(max_entries=2)
    files = []
    for i in range(3):
        f = tmp_path / f"bin{i}"
        f.write_bytes(b"x" * i)
        files.append(f)

    def digest(path: Path) -> str:
        fd = os.open(path, os.O_RDONLY)
        try:
            return cache.digest(fd)
        finally:
            os.close(fd)

    for f in files:
        assert digest(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert len(cache) == 2
    files[0].write_bytes(b"changed")
    assert digest(files[0]) == hashlib.sha256(b"changed").hexdigest()
    with pytest.raises(CallerUnidentified):
        ExeHashCache(max_entries=0)


BORROWER = str(Path(__file__).with_name("borrower.py"))
SLEEP = os.path.realpath("/bin/sleep")


def test_socket_shared_with_another_process_is_refused(
    listener: tuple[socket.socket, str],
) -> None:
    """A fork keeps the socket while its child connects and execs an
    allowed binary. Refused while the parent holds a copy; the same connection is
    accepted once only the attested process holds it."""
    sock, path = listener
    borrower = subprocess.Popen(
        [sys.executable, BORROWER, path, SLEEP, "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert borrower.stdin is not None
    assert borrower.stdout is not None
    conn, _ = sock.accept()
    try:
        ready = borrower.stdout.readline().split()
        assert ready[0] == "ready"
        child = int(ready[1])
        assert read_peercred(conn).pid == child
        for use_pidfd in (True, False):
            with pytest.raises(CallerUnidentified, match="shared with another process"):
                identify_unix_peer(
                    conn, cache=ExeHashCache(), accepted_at=boot_ticks_now(), use_pidfd=use_pidfd
                )
        borrower.stdin.write("close\n")
        borrower.stdin.flush()
        assert borrower.stdout.readline().strip() == "closed"
        ident = identify_unix_peer(conn, cache=ExeHashCache(), accepted_at=boot_ticks_now())
        assert (ident.pid, ident.exe_path) == (child, SLEEP)
    finally:
        borrower.communicate("")
        conn.close()


def test_caller_that_handed_its_socket_away_is_refused(
    listener: tuple[socket.socket, str],
) -> None:
    """The connecting process no longer holds its socket: another one does."""
    sock, path = listener
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    conn, _ = sock.accept()
    # A child that gets the connected socket by inheritance; we (the connecting
    # process) then close our copy.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        pass_fds=(client.fileno(),),
    )
    client.close()
    try:
        with pytest.raises(CallerUnidentified, match="shared with another process"):
            identify_unix_peer(conn, cache=ExeHashCache(), accepted_at=boot_ticks_now())
    finally:
        holder.communicate(b"")
        conn.close()


def _start_borrower(path: str) -> tuple[subprocess.Popen[str], int]:
    """borrower.py in ``hold`` mode: its child (``sleep``) connected to ``path``."""
    borrower = subprocess.Popen(
        [sys.executable, BORROWER, path, SLEEP, "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert borrower.stdout is not None
    ready = borrower.stdout.readline().split()
    assert ready[0] == "ready"
    return borrower, int(ready[1])


def test_concurrent_callers_share_passes_and_the_borrower_is_still_refused(
    listener: tuple[socket.socket, str],
) -> None:
    """Connections attested together through one scanner share its passes; each gets
    its own verdict: the borrowed one is refused, the others are not."""
    sock, path = listener
    children = [_connect_child(path) for _ in range(3)]
    honest = [sock.accept()[0] for _ in children]
    borrower, borrowed_pid = _start_borrower(path)
    borrowed, _ = sock.accept()
    accepted_ns = time.monotonic_ns()
    scanner = HolderScanner()
    conns = [*honest, borrowed]
    try:
        assert read_peercred(borrowed).pid == borrowed_pid

        def attest(conn: socket.socket) -> int | str:
            try:
                return identify_unix_peer(
                    conn,
                    cache=ExeHashCache(),
                    accepted_at=boot_ticks_now(),
                    scanner=scanner,
                    accepted_ns=accepted_ns,
                ).pid
            except CallerUnidentified as exc:
                return exc.reason

        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            verdicts = list(pool.map(attest, conns))
        assert verdicts[:-1] == [read_peercred(conn).pid for conn in honest]
        assert {read_peercred(conn).pid for conn in honest} == {child.pid for child in children}
        assert "shared with another process" in str(verdicts[-1])
        assert 1 <= scanner.passes <= len(conns)
        assert scanner.lookups == len(conns)
    finally:
        borrower.communicate("")
        for child in children:
            child.communicate(b"")
        for conn in conns:
            conn.close()


def test_a_pass_from_before_the_connection_never_answers_for_it(
    listener: tuple[socket.socket, str],
) -> None:
    """A scanner that just ran a pass must read the tables again for a connection
    accepted after that pass started."""
    sock, path = listener
    scanner = HolderScanner()
    child = _connect_child(path)
    conn, _ = sock.accept()
    try:
        identify_unix_peer(
            conn, cache=ExeHashCache(), accepted_at=boot_ticks_now(), scanner=scanner
        )
    finally:
        child.communicate(b"")
        conn.close()
    passes = scanner.passes
    borrower, _ = _start_borrower(path)
    borrowed, _ = sock.accept()
    try:
        with pytest.raises(CallerUnidentified, match="shared with another process"):
            identify_unix_peer(
                borrowed,
                cache=ExeHashCache(),
                accepted_at=boot_ticks_now(),
                scanner=scanner,
                accepted_ns=time.monotonic_ns(),
            )
        assert scanner.passes == passes + 1
    finally:
        borrower.communicate("")
        borrowed.close()


def test_recheck_reads_the_tables_again(listener: tuple[socket.socket, str]) -> None:
    """Attested alone, then the caller's socket is inherited by another process: a
    re-check refuses, although the scanner still has the pass that accepted it."""
    sock, path = listener
    scanner = HolderScanner()
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    conn, _ = sock.accept()
    holder = None
    try:
        ident = identify_unix_peer(
            conn, cache=ExeHashCache(), accepted_at=boot_ticks_now(), scanner=scanner
        )
        assert ident.pid == os.getpid()
        check_sole_holder(conn, ident, pidfd=None, scanner=scanner)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            pass_fds=(client.fileno(),),
        )
        with pytest.raises(CallerUnidentified, match="shared with another process"):
            check_sole_holder(conn, ident, pidfd=None, scanner=scanner)
    finally:
        if holder is not None:
            holder.communicate(b"")
        client.close()
        conn.close()
