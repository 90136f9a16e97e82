"""E1: attest the process at the other end of a Unix socket (SPEC.md 8).

Steps, per accepted connection:

1. ``SO_PEERCRED`` gives pid, uid and gid as of ``connect()``.
2. ``SO_PEERPIDFD`` (Linux 6.5+, option 77; Python 3.11 has no constant) gives
   a pidfd for exactly that process. Its ``/proc/self/fdinfo`` ``Pid:`` line
   says whether the process still exists; checked before and after reading
   ``/proc``, it proves the readings belong to the connecting process.
   Without a pidfd the fallback reads the start time from ``/proc/<pid>/stat``
   before and after, and refuses a process that started after the connection
   was accepted. (The fallback cannot see a pid reused while the connection
   waited in the listen backlog; the pidfd path can.)
3. The executable is read through ``/proc/<pid>/exe`` itself (never by
   re-opening the path it names), hashed with sha256, and the digest cached by
   (device, inode, mtime, ctime, size) in a bounded LRU.
4. The connection must not be borrowable: the caller's own socket is named by
   the kernel (``NETLINK_SOCK_DIAG``, ``UNIX_DIAG_PEER`` of the accepted socket),
   and the connection is refused unless the attested pid is the only process
   visible from here whose descriptor table holds it. The tables are read by a
   pass over ``/proc/*/fd`` that started after the connection was accepted;
   concurrent connections share passes (:class:`attest._sockdiag.HolderScanner`:
   one pass answers every connection accepted before it started, so N connections
   accepted together cost about one pass). The pidfd (or, without one, the start
   time) is checked once that pass is over.
   Without this a process could fork, let the child connect and exec an allowed
   binary, and speak on its own copy of the socket under the child's identity.
   See docs/attest.md for what this does not see (a descriptor in flight in an
   ``SCM_RIGHTS`` message, one taken later with ``pidfd_getfd``).

Everything here is blocking file I/O on ``/proc``: call :func:`identify_unix_peer`
through ``trio.to_thread.run_sync`` (the serving helper does).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from attest._sockdiag import HolderScanner, judge_holders, unix_peer_inode
from attest.caller import ProcessIdentity
from attest.errors import CallerGone, CallerUnidentified

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")
_HASH_CHUNK = 1 << 20
# Shared by every E1 lookup of this process, so concurrent connections share passes.
_SHARED_SCANNER = HolderScanner()


def shared_scanner() -> HolderScanner:
    """The descriptor-table scanner E1 lookups share by default (one per process)."""
    return _SHARED_SCANNER


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def read_peercred(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED of a connected AF_UNIX socket.

    Raises:
        CallerUnidentified: not a Unix socket, or the kernel reports no peer.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, struct.error) as exc:
        raise CallerUnidentified("cannot read the peer credentials of the connection") from exc
    if pid <= 0:
        raise CallerUnidentified("the peer has no process in this pid namespace")
    return PeerCred(pid=pid, uid=uid, gid=gid)


def open_peer_pidfd(sock: socket.socket) -> int | None:
    """A pidfd for the peer (caller closes it), or None if the kernel lacks SO_PEERPIDFD.

    Raises:
        CallerGone: the kernel has SO_PEERPIDFD but the peer process is gone.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4)
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise CallerGone("the calling process has exited") from exc
    fd = int.from_bytes(raw, "little", signed=True)
    return fd if fd >= 0 else None


def boot_ticks_now() -> int:
    """Now, in the unit of ``/proc/<pid>/stat`` start times (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)


def parse_stat_start_time(stat_line: str) -> int:
    """Field 22 (starttime) of a ``/proc/<pid>/stat`` line.

    The command name (field 2) may contain spaces and parentheses, so fields
    are counted after the last ``)``.

    Raises:
        CallerUnidentified: the line does not have the expected shape.
    """
    close = stat_line.rfind(")")
    fields = stat_line[close + 1 :].split()
    if close < 0 or len(fields) < 20:
        raise CallerUnidentified("unexpected /proc/<pid>/stat format")
    try:
        return int(fields[19])
    except ValueError as exc:
        raise CallerUnidentified("unexpected /proc/<pid>/stat format") from exc


def _start_time(proc: Path) -> int:
    try:
        # bytes: the command name in it is the caller's to choose, not necessarily UTF-8
        return parse_stat_start_time((proc / "stat").read_bytes().decode("latin-1"))
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise CallerGone("the calling process has exited") from exc
    except OSError as exc:
        reason = f"cannot read the caller's process status: {exc.strerror}"
        raise CallerUnidentified(reason) from exc


def _pidfd_pid(pidfd: int) -> int:
    """The pid a pidfd refers to in our namespace, or -1 once the process is reaped."""
    try:
        text = Path(f"/proc/self/fdinfo/{pidfd}").read_text()
    except OSError as exc:
        raise CallerUnidentified("cannot inspect the peer pidfd") from exc
    for line in text.splitlines():
        if line.startswith("Pid:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError) as exc:
                raise CallerUnidentified("unexpected pidfd fdinfo format") from exc
    raise CallerUnidentified("this kernel does not report the pid of a pidfd")


class ExeHashCache:
    """Bounded LRU of executable digests keyed by (dev, inode, mtime, ctime, size).

    Thread-safe: lookups run in worker threads. A changed binary changes its
    mtime/ctime (or inode, for the usual replace-by-rename) and is hashed again.
    """

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 1:
            raise CallerUnidentified("the executable hash cache needs at least one entry")
        self._max = max_entries
        self._entries: OrderedDict[tuple[int, int, int, int, int], str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, fd: int) -> str:
        """sha256 (64 lowercase hex) of the open file ``fd``, from the cache when unchanged."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        h = hashlib.sha256()
        offset = 0
        while chunk := os.pread(fd, _HASH_CHUNK, offset):
            h.update(chunk)
            offset += len(chunk)
        value = h.hexdigest()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value


def identify_process(
    cred: PeerCred,
    *,
    pidfd: int | None,
    accepted_at: int,
    cache: ExeHashCache,
) -> ProcessIdentity:
    """Attest the process ``cred.pid``, guarded against pid reuse.

    Args:
        cred: the peer credentials of the connection.
        pidfd: a pidfd for the peer (from :func:`open_peer_pidfd`), or None to use
            the start-time fallback. Not closed here.
        accepted_at: :func:`boot_ticks_now` taken when the connection was accepted.
        cache: the executable digest cache.

    Raises:
        CallerGone: the process exited, or the pid now names another process.
        CallerUnidentified: ``/proc`` could not be read for another reason.
    """
    proc = _PROC / str(cred.pid)
    if pidfd is not None and _pidfd_pid(pidfd) != cred.pid:
        raise CallerGone("the calling process has exited")
    started = _start_time(proc)
    if pidfd is None and started > accepted_at:
        raise CallerGone("the pid of the caller now belongs to a process started after it")
    try:
        exe_path = os.readlink(proc / "exe")
        fd = os.open(proc / "exe", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise CallerGone("the calling process has exited") from exc
    except OSError as exc:
        raise CallerUnidentified(f"cannot read the caller's executable: {exc.strerror}") from exc
    try:
        exe_sha256 = cache.digest(fd)
    except OSError as exc:
        raise CallerUnidentified(f"cannot hash the caller's executable: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if _start_time(proc) != started:
        raise CallerGone("the pid of the caller was reused while it was being attested")
    if pidfd is not None and _pidfd_pid(pidfd) != cred.pid:
        raise CallerGone("the calling process exited while it was being attested")
    return ProcessIdentity(
        pid=cred.pid,
        uid=cred.uid,
        gid=cred.gid,
        exe_path=exe_path,
        exe_sha256=exe_sha256,
        start_time=started,
        pidfd_checked=pidfd is not None,
    )


def identify_unix_peer(
    sock: socket.socket,
    *,
    cache: ExeHashCache,
    accepted_at: int,
    use_pidfd: bool = True,
    sole_holder: bool = True,
    scanner: HolderScanner | None = None,
    accepted_ns: int | None = None,
) -> ProcessIdentity:
    """E1: the attested identity of the process connected to ``sock`` (blocking).

    Args:
        sock: an accepted AF_UNIX stream socket (not closed here).
        cache: the executable digest cache shared by all connections.
        accepted_at: :func:`boot_ticks_now` at accept time.
        use_pidfd: use SO_PEERPIDFD when the kernel has it (False forces the
            start-time fallback; tests use it to exercise that path).
        sole_holder: refuse a connection whose socket another process holds too
            (step 4 of the module docstring). Only the benchmark turns it off, to
            show its cost.
        scanner: who reads the descriptor tables; None for the one this process
            shares between all connections (what lets concurrent ones share passes).
        accepted_ns: ``time.monotonic_ns()`` read after ``accept()`` returned this
            connection (never before it). A descriptor-table pass that started later
            may answer for it; None uses the time of this call, which is later, so
            fewer passes qualify. A connection that waited for a worker thread gains
            most from it.

    Raises:
        CallerGone, CallerUnidentified: see :func:`identify_process`; also
            CallerUnidentified when another process holds the caller's socket or
            the kernel cannot name that socket, CallerGone when the attested
            process no longer holds it.
    """
    since = time.monotonic_ns() if accepted_ns is None else min(accepted_ns, time.monotonic_ns())
    cred = read_peercred(sock)
    pidfd = open_peer_pidfd(sock) if use_pidfd else None
    try:
        identity = identify_process(cred, pidfd=pidfd, accepted_at=accepted_at, cache=cache)
        if sole_holder:
            if pidfd is None:
                # No pidfd pins the caller: the pass must fall between the two
                # start-time readings that bracket it (the first was just taken).
                since = time.monotonic_ns()
            _check_holders(sock, identity, pidfd=pidfd, since=since, scanner=scanner)
        return identity
    finally:
        if pidfd is not None:
            os.close(pidfd)


def check_sole_holder(
    sock: socket.socket,
    identity: ProcessIdentity,
    *,
    pidfd: int | None,
    scanner: HolderScanner | None = None,
) -> None:
    """Refuse unless the attested process alone holds the caller's end of ``sock``, now.

    Also usable to re-check a keep-alive connection later (the pass that answers
    starts after this call).

    Args:
        sock: the accepted AF_UNIX socket.
        identity: the attested caller.
        pidfd: a pidfd for ``identity.pid``, checked after the pass so the holder seen
            is the attested process, not a later one with its pid; without it the
            start time is compared instead.
        scanner: as for :func:`identify_unix_peer`.

    Raises:
        CallerUnidentified: another process holds the caller's socket, or the kernel
            cannot name it, or the descriptor tables cannot be read.
        CallerGone: the attested process exited or no longer holds the socket.
    """
    _check_holders(sock, identity, pidfd=pidfd, since=time.monotonic_ns(), scanner=scanner)


def _check_holders(
    sock: socket.socket,
    identity: ProcessIdentity,
    *,
    pidfd: int | None,
    since: int,
    scanner: HolderScanner | None,
) -> None:
    inode = unix_peer_inode(sock)
    holders = (scanner or _SHARED_SCANNER).holders(inode, since=since)
    judge_holders(holders, identity.pid)
    # The pass is over. With a pidfd (taken for the process that connected, so the
    # pass may even have come before it was opened), the pid still naming that
    # process now means it named it during the pass too; without one, the start
    # time read before the pass must still hold.
    if pidfd is not None:
        if _pidfd_pid(pidfd) != identity.pid:
            raise CallerGone("the calling process exited while it was being attested")
    elif _start_time(_PROC / str(identity.pid)) != identity.start_time:
        raise CallerGone("the pid of the caller was reused while it was being attested")
