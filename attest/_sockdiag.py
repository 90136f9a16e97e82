"""Shared socket lookups for E1 and E2: ``NETLINK_SOCK_DIAG`` and descriptor-table scans.

* :func:`diag_request` sends one ``SOCK_DIAG_BY_FAMILY`` request and returns the
  kernel's single answer (TCP lookups in :mod:`attest.netns`, Unix ones here).
* :func:`unix_peer_inode` names the socket at the other end of an accepted
  AF_UNIX connection (``UNIX_DIAG_PEER``).
* :func:`socket_holders` and :func:`sole_holder_check` find the processes whose
  descriptor tables hold a socket, reading ``/proc/<pid>/fd`` through one
  directory descriptor per process.

All blocking: run in a worker thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
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
        dir_fd = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        names = os.listdir(dir_fd)
        for name in names:
            try:
                if os.readlink(name, dir_fd=dir_fd) == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    return False


def socket_holders(
    inode: int,
    proc: Path = PROC,
    *,
    uid: int | None = None,
    skip_uid: int | None = None,
    stop_unless: int | None = None,
) -> list[int]:
    """Pids whose descriptor table holds ``socket:[inode]`` (those visible from here).

    Args:
        inode: the socket's inode.
        proc: the proc mount.
        uid: look only at processes whose ``/proc/<pid>`` belongs to this uid.
        skip_uid: skip the processes whose ``/proc/<pid>`` belongs to this uid.
        stop_unless: stop at the first holder that is not this pid.
    """
    target = f"socket:[{inode}]"
    pids: list[int] = []
    try:
        entries = os.scandir(proc)
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
            if holds(f"{entry.path}/fd", target):
                pids.append(int(entry.name))
                if stop_unless is not None and pids[-1] != stop_unless:
                    break
    return pids


def sole_holder_check(inode: int, pid: int, uid: int, proc: Path = PROC) -> None:
    """Refuse unless ``pid`` is the only process visible from here holding ``socket:[inode]``.

    The processes of ``uid`` (by ``/proc/<pid>`` owner) are searched first, so a
    same-uid borrower (the usual case: a fork that kept the socket) is found
    quickly; then every other visible process. Processes whose descriptor table
    cannot be read (other uids for an unprivileged reader, non-dumpable ones,
    other pid namespaces) are not seen.

    Raises:
        CallerUnidentified: another process holds the socket too.
        CallerGone: ``pid`` no longer holds it.
    """
    holders = socket_holders(inode, proc, uid=uid, stop_unless=pid)
    if any(h != pid for h in holders):
        raise CallerUnidentified("the caller's connection is shared with another process")
    others = socket_holders(inode, proc, skip_uid=uid, stop_unless=pid)
    if any(h != pid for h in others):
        raise CallerUnidentified("the caller's connection is shared with another process")
    if pid not in holders and pid not in others:
        raise CallerGone("the calling process no longer holds the connection")
