"""Shared socket lookups for E1 and E2: ``NETLINK_SOCK_DIAG`` and descriptor-table scans.

* :func:`diag_request` sends one ``SOCK_DIAG_BY_FAMILY`` request and returns the
  kernel's single answer (TCP lookups in :mod:`attest.netns`, Unix ones here).
* :func:`unix_peer_inode` names the socket at the other end of an accepted
  AF_UNIX connection (``UNIX_DIAG_PEER``).
* :func:`scan_socket_holders` reads, in one pass over every ``/proc/<pid>/fd``
  visible from here (one directory descriptor per process), which processes hold
  which sockets; :class:`HolderScanner` shares such passes between concurrent E1
  lookups, and :func:`judge_holders` is the sole-holder decision.
  :func:`socket_holders` and :func:`holds` are the single-socket forms E2 uses.

All blocking: run in a worker thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import CallerGone, CallerUnidentified

PROC = Path("/proc")

# linux/netlink.h, linux/sock_diag.h, linux/unix_diag.h
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x01
NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, port id
NO_COOKIE = 0xFFFFFFFF
_DIAG_TIMEOUT = 1.0
_UNIX_DIAG_REQUEST = struct.Struct("=BBHIIIII")  # family, proto, pad, states, ino, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie
_RTATTR = struct.Struct("=HH")  # len, type
_UDIAG_SHOW_PEER = 0x04
_UNIX_DIAG_PEER = 2
_sequence = itertools.count(1)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class DiagUnavailable(CallerUnidentified):
    """The kernel cannot be asked (no sock_diag for this family, or a malformed answer)."""


def diag_request(body: bytes) -> tuple[int, bytes]:
    """Send one ``SOCK_DIAG_BY_FAMILY`` request; the answer's message type and payload.

    Returns:
        ``(NLMSG_ERROR, payload)`` or ``(SOCK_DIAG_BY_FAMILY, payload)``; the payload
        starts after the netlink header and is bounded by the message length.

    Raises:
        DiagUnavailable: no answer, or one that is not for this request.
    """
    seq = next(_sequence) & 0xFFFFFFFF
    header = NLMSG_HEADER.pack(
        NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0
    )
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(_DIAG_TIMEOUT)
            nl.sendto(header + body, (0, 0))
            answer = nl.recv(8192)
        length, kind, _, answer_seq, _ = NLMSG_HEADER.unpack_from(answer)
    except (OSError, struct.error) as exc:
        raise DiagUnavailable("no sock_diag answer") from exc
    if answer_seq != seq or length > len(answer) or length < NLMSG_HEADER.size:
        raise DiagUnavailable("a sock_diag answer to another request")
    return kind, answer[NLMSG_HEADER.size : length]


def unix_peer_inode(sock: socket.socket) -> int:
    """The inode of the socket connected to the AF_UNIX socket ``sock`` (``UNIX_DIAG_PEER``).

    The kernel looks the socket up by its inode in this network namespace (the
    listener's, so also the accepted socket's).

    Raises:
        CallerGone: the peer's socket is gone (closed by every holder).
        CallerUnidentified: the kernel cannot answer (no ``unix_diag``): fail closed.
    """
    try:
        ours = os.fstat(sock.fileno()).st_ino
    except OSError as exc:
        raise CallerUnidentified("cannot read the connection's socket inode") from exc
    body = _UNIX_DIAG_REQUEST.pack(
        socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ours, _UDIAG_SHOW_PEER, NO_COOKIE, NO_COOKIE
    )
    try:
        kind, payload = diag_request(body)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", payload)
            if code == -errno.ENOENT:
                raise CallerGone("the connection is already closed")
            raise DiagUnavailable("sock_diag refused the request")
        if kind != SOCK_DIAG_BY_FAMILY:
            raise DiagUnavailable("unexpected sock_diag answer")
        _, _, _, _, ino, _, _ = _UNIX_DIAG_MSG.unpack_from(payload)
        if ino != ours:
            raise DiagUnavailable("sock_diag answered about another socket")
        offset = _UNIX_DIAG_MSG.size
        while offset + _RTATTR.size <= len(payload):
            attr_len, attr_type = _RTATTR.unpack_from(payload, offset)
            if attr_len < _RTATTR.size:
                break
            if attr_type == _UNIX_DIAG_PEER and attr_len >= _RTATTR.size + 4:
                (peer,) = struct.unpack_from("=I", payload, offset + _RTATTR.size)
                if peer:
                    return int(peer)
            offset += (attr_len + 3) & ~3
    except (DiagUnavailable, struct.error) as exc:
        raise CallerUnidentified(
            "cannot find the caller's socket (the kernel has no unix_diag)"
        ) from exc
    raise CallerGone("the caller's end of the connection is closed")


def holds(fd_dir: str, target: str) -> bool:
    """Whether the descriptor table at ``fd_dir`` (``/proc/<pid>/fd``) has ``target``.

    The table is read through one directory descriptor, which stays bound to that
    process even if its pid is reused meanwhile; a process that exits (or a table we
    may not read) holds nothing.
    """
    try:
        dir_fd = os.open(fd_dir, _DIR_FLAGS)
    except OSError:
        return False
    try:
        wanted = os.fsencode(target)
        return any(link == wanted for link in _links(dir_fd))
    finally:
        os.close(dir_fd)


def _links(dir_fd: int) -> Iterator[bytes]:
    """The link texts of the descriptor table open at ``dir_fd``; unreadable entries skipped."""
    readlink = os.readlink
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return
    for name in names:
        try:
            yield readlink(name.encode(), dir_fd=dir_fd)
        except OSError:
            continue


def socket_holders(
    inode: int,
    proc: Path = PROC,
    *,
    uid: int | None = None,
    skip_uid: int | None = None,
    stop_unless: int | None = None,
) -> list[int]:
    """Pids whose descriptor table holds ``socket:[inode]`` (those visible from here).

    One lookup, one pass of its own; E1 uses :class:`HolderScanner`, which shares
    passes between concurrent lookups.

    Args:
        inode: the socket's inode.
        proc: the proc mount.
        uid: look only at processes whose ``/proc/<pid>`` belongs to this uid.
        skip_uid: skip the processes whose ``/proc/<pid>`` belongs to this uid.
        stop_unless: stop at the first holder that is not this pid.
    """
    target = socket_link(inode)
    pids: list[int] = []
    try:
        entries = os.scandir(os.fsencode(proc))
    except OSError:
        return pids
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            if uid is not None or skip_uid is not None:
                try:
                    owner = entry.stat().st_uid
                except OSError:
                    continue
                if (uid is not None and owner != uid) or owner == skip_uid:
                    continue
            try:
                dir_fd = os.open(entry.path + b"/fd", _DIR_FLAGS)
            except OSError:
                continue
            try:
                held = any(link == target for link in _links(dir_fd))
            finally:
                os.close(dir_fd)
            if held:
                pids.append(int(entry.name))
                if stop_unless is not None and pids[-1] != stop_unless:
                    break
    return pids


def socket_link(inode: int) -> bytes:
    """What ``readlink`` of a descriptor of socket ``inode`` gives: ``socket:[<inode>]``."""
    return b"socket:[%d]" % inode


def scan_socket_holders(proc: str | Path = PROC) -> dict[bytes, list[int]]:
    """One pass over every descriptor table visible from here: who holds which socket.

    Each process's table is read through one directory descriptor (bound to that
    process even if its pid is reused meanwhile), and every socket descriptor in it
    is recorded. A process that exits during the pass, or whose table we may not
    read, holds nothing. What a pass says about a process is its table at the
    moment the pass read it.

    Returns:
        :func:`socket_link` text → pids holding that socket (a pid once per
        descriptor). Its size is the number of socket descriptors visible.

    Raises:
        CallerUnidentified: the process list itself cannot be read (fail closed).
    """
    root = os.fsencode(proc)
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise CallerUnidentified("cannot list the processes to find a socket's holders") from exc
    sockets: dict[bytes, list[int]] = {}
    readlink = os.readlink
    listdir = os.listdir
    for name in names:
        if not name.isdigit():
            continue
        try:
            dir_fd = os.open(b"%s/%s/fd" % (root, name), _DIR_FLAGS)
        except OSError:
            continue
        try:
            entries = listdir(dir_fd)
        except OSError:
            entries = []
        try:
            pid = int(name)
            for entry in entries:
                try:
                    link = readlink(entry.encode(), dir_fd=dir_fd)
                except OSError:
                    continue
                if link.startswith(b"socket:["):
                    found = sockets.get(link)
                    if found is None:
                        sockets[link] = [pid]
                    else:
                        found.append(pid)
        finally:
            os.close(dir_fd)
    return sockets


def judge_holders(holders: Collection[int], pid: int) -> None:
    """Refuse unless ``pid`` is the only holder of the caller's socket.

    Raises:
        CallerUnidentified: another process holds the socket too.
        CallerGone: ``pid`` does not hold it (any more).
    """
    if any(h != pid for h in holders):
        raise CallerUnidentified("the caller's connection is shared with another process")
    if pid not in holders:
        raise CallerGone("the calling process no longer holds the connection")


@dataclass(eq=False)
class _Pass:
    """One pass: when it started (``time.monotonic_ns()`` before its first read) and,
    once done, what it found."""

    started: int
    sockets: dict[bytes, list[int]] = field(default_factory=dict)
    done: bool = False
    failed: bool = False


class HolderScanner:
    """Finds the holders of sockets for concurrent callers, sharing passes between them.

    Thread-safe; one pass runs at a time, in the thread of a caller that needs it.
    A lookup says since when the answer must be fresh (``since``: a
    ``time.monotonic_ns()`` reading taken after its connection was accepted) and is
    answered by **a pass that started after that moment**: the last finished pass if
    it qualifies, else the running one if it does, else the next one (which the first
    waiter to find no pass running starts). Every pass records every socket
    descriptor it sees, so one pass answers every connection accepted before it
    started: N connections accepted together cost about one pass, and a lookup waits
    two passes at most.

    Why that is enough: a pass that started after the accept reads each process's
    table after the accept, so a process that held the caller's socket at accept
    time and still holds it when its table is read is seen, exactly as with a pass
    of its own. (What no pass sees: a descriptor moved to an already-read process
    during the pass, one in flight in ``SCM_RIGHTS``, tables we may not read.)

    Args:
        proc: the proc mount.
        scan: the pass itself (:func:`scan_socket_holders`); tests wrap it to hold a
            pass open.
        wait_limit: seconds a lookup waits for a pass run by another thread before it
            gives up (fail closed).
    """

    def __init__(
        self,
        proc: str | Path = PROC,
        *,
        scan: Callable[[str | Path], dict[bytes, list[int]]] = scan_socket_holders,
        wait_limit: float = 30.0,
    ) -> None:
        self._proc = proc
        self._scan = scan
        self._wait_limit = wait_limit
        self._cond = threading.Condition()
        self._last: _Pass | None = None
        self._running: _Pass | None = None
        self._passes = 0
        self._lookups = 0

    @property
    def passes(self) -> int:
        """Passes run so far (the benchmark reports lookups per pass)."""
        return self._passes

    @property
    def lookups(self) -> int:
        """Lookups answered or refused so far."""
        return self._lookups

    def holders(self, inode: int, *, since: int) -> tuple[int, ...]:
        """The pids whose descriptor tables hold socket ``inode`` (blocking).

        Args:
            inode: the socket's inode.
            since: a ``time.monotonic_ns()`` reading taken after the connection was
                accepted (never before: an earlier value lets an older pass answer).

        Raises:
            CallerUnidentified: the pass failed, or none ended within the wait limit.
        """
        link = socket_link(inode)
        deadline = time.monotonic() + self._wait_limit
        with self._cond:
            self._lookups += 1
            while True:
                last, running = self._last, self._running
                if last is not None and last.started > since:
                    return tuple(last.sockets.get(link, ()))
                if running is None:
                    chosen = self._running = _Pass(started=time.monotonic_ns())
                    break
                if running.started > since:
                    while not running.done:
                        self._wait(deadline)
                    return self._answer(running, link)
                # The running pass started too early for this lookup: wait for the next.
                while self._running is running:
                    self._wait(deadline)
        try:
            chosen.sockets = self._scan(self._proc)
        except BaseException:
            chosen.failed = True
            raise
        finally:
            with self._cond:
                chosen.done = True
                self._running = None
                self._passes += 1
                if not chosen.failed:
                    self._last = chosen
                self._cond.notify_all()
        return self._answer(chosen, link)

    def _wait(self, deadline: float) -> None:
        """One wait on ``self._cond`` (held), failing closed past ``deadline``."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise CallerUnidentified("the search for the caller's socket took too long")
        self._cond.wait(left)

    @staticmethod
    def _answer(done: _Pass, link: bytes) -> tuple[int, ...]:
        if done.failed:
            raise CallerUnidentified("cannot find the holders of the caller's socket")
        return tuple(done.sockets.get(link, ()))
