"""E2: attest a caller on localhost TCP inside a pod (SPEC.md 8).

A connection is accepted as local only if both ends are loopback addresses.
Loopback traffic never crosses a network namespace, and the caller's socket
must also appear in this namespace's ``/proc/net/tcp{,6}`` (``/proc/net`` is the
reading task's namespace). The socket's inode then leads to the process
holding it (``/proc/<pid>/fd/* -> socket:[inode]``) when that process is
visible from here; it is attested like an E1 caller, with a pidfd pinning the
pid. A process that is not visible (another pid namespace of the same pod) is
accepted only under the explicit ``pod_wide`` policy, as "some process in this
pod", never as a particular uid or executable.

Cost: the caller's socket (owner uid and inode) is looked up by its exact address pair
with one ``NETLINK_SOCK_DIAG`` request, answered from the kernel's tables for the
network namespace of the asking socket (this one); where that is unavailable, only the
rows of ``/proc/net/tcp{,6}`` naming the connection's two ports are parsed.

Which process holds the socket (each descriptor table read through one directory
descriptor) is found in one of two ways, with the same outcome:

* Given the accept time (``accepted_ns``, what the serving helper passes), from a pass
  over every visible ``/proc/<pid>/fd`` that started after the connection was accepted,
  shared with every other lookup (E1's too) whose connection was accepted before it
  started (:class:`attest._sockdiag.HolderScanner`): N connections accepted together
  cost about one pass. Such a pass reads every table after the accept, so it sees every
  process that held the caller's socket then and still holds it when its table is read,
  as a pass of the lookup's own would; a pass that started before the accept is never
  used (that socket may not have existed yet: "not visible"), and a pass that fails or
  does not end in time refuses, whatever the policy.
* Without it, by passes of its own: first over the processes owned by the socket's uid
  (``/proc/<pid>`` owner, the uid the identity reports), then, only when none of them
  holds the socket, over all visible processes.

Either way the socket is attributed by the same rule: to its only holder; among several
holders, to the one owned by the socket's uid (a socket also held by a process of
*another* uid, passed over ``SCM_RIGHTS`` or inherited across a set-uid exec); two
holders of that uid (e.g. after a fork), or several holders none of which has that uid,
are refused; no holder is "not visible" (refused, or ``pod_wide``). The holder chosen is
then pinned with a pidfd and must still hold the socket, before and after it is
attested. Nothing is cached between connections but the scanner's last pass, which
answers only for connections accepted before it started.

All of this is blocking ``/proc`` I/O: run :func:`identify_tcp_peer` in a thread.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from attest._sockdiag import (
    NLMSG_ERROR,
    NO_COOKIE,
    SOCK_DIAG_BY_FAMILY,
    DiagUnavailable,
    HolderScanner,
    diag_request,
    holds,
    socket_holders,
)
from attest.caller import CallerIdentity, ProcessIdentity, Transport
from attest.errors import CallerGone, CallerNotLocal, CallerUnidentified
from attest.peercred import ExeHashCache, PeerCred, identify_process, shared_scanner

__all__ = [
    "Address",
    "TcpSocketEntry",
    "attribute_holders",
    "find_peer_socket",
    "identify_tcp_peer",
    "parse_proc_net_tcp",
    "sock_diag_lookup",
    "socket_holders",
]

_TCP_ESTABLISHED = 0x01

# NETLINK_SOCK_DIAG (linux/inet_diag.h); the netlink part is in attest._sockdiag
_DIAG_REQUEST = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order)
_SOCKID_TAIL = struct.Struct("=III")  # interface, cookie[2]
_DIAG_MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans
_DIAG_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


@dataclass(frozen=True, slots=True)
class TcpSocketEntry:
    """One row of ``/proc/net/tcp`` or ``/proc/net/tcp6``."""

    local: Address
    remote: Address
    state: int
    uid: int
    inode: int


def _parse_address(text: str) -> Address:
    host_hex, _, port_hex = text.partition(":")
    raw = bytes.fromhex(host_hex)
    port = int(port_hex, 16)
    if len(raw) == 4:
        # One 32-bit word in host byte order.
        return ipaddress.IPv4Address(struct.pack("=I", int.from_bytes(raw, "big"))), port
    if len(raw) == 16:
        words = struct.unpack(">4I", raw)
        return ipaddress.IPv6Address(b"".join(struct.pack("=I", w) for w in words)), port
    raise CallerUnidentified("unexpected /proc/net/tcp address format")


def parse_proc_net_tcp(text: str, *, ports: tuple[int, int] | None = None) -> list[TcpSocketEntry]:
    """Parse the text of ``/proc/net/tcp`` or ``/proc/net/tcp6`` (header line skipped).

    Args:
        text: the file's text.
        ports: ``(local, remote)``: parse only the rows whose local and remote ports
            are these (the others are skipped unparsed).

    Raises:
        CallerUnidentified: a (parsed) row does not have the kernel's format.
    """
    entries = []
    lines = text.splitlines()[1:]
    if ports is not None:
        local_tag, remote_tag = f":{ports[0]:04X} ", f":{ports[1]:04X} "
        lines = [line for line in lines if local_tag in line and remote_tag in line]
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        try:
            entries.append(
                TcpSocketEntry(
                    local=_parse_address(fields[1]),
                    remote=_parse_address(fields[2]),
                    state=int(fields[3], 16),
                    uid=int(fields[7]),
                    inode=int(fields[9]),
                )
            )
        except (IndexError, ValueError, struct.error) as exc:
            raise CallerUnidentified("unexpected /proc/net/tcp format") from exc
    return entries


def _normalise(addr: tuple[str, int]) -> Address:
    ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, addr[1]
    return ip, addr[1]


def _entry_address(addr: Address) -> Address:
    ip, port = addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, port
    return ip, port


def find_peer_socket(
    entries: list[TcpSocketEntry], *, peer: Address, ours: Address
) -> TcpSocketEntry | None:
    """The caller's socket: the established row whose local end is ``peer``, remote ``ours``."""
    for entry in entries:
        if (
            entry.state == _TCP_ESTABLISHED
            and _entry_address(entry.local) == peer
            and _entry_address(entry.remote) == ours
        ):
            return entry
    return None


def _packed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return ip.packed.ljust(16, b"\0")


def _same_ip(raw: bytes, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """``raw`` (16 bytes from SOCK_DIAG) is ``ip``; an IPv6 socket shows IPv4 ends mapped."""
    if raw == _packed(ip):
        return True
    return isinstance(ip, ipaddress.IPv4Address) and raw == b"\0" * 10 + b"\xff\xff" + ip.packed


def sock_diag_lookup(*, peer: Address, ours: Address) -> tuple[bool, TcpSocketEntry | None]:
    """The caller's socket by its exact address pair, asked of the kernel (SOCK_DIAG).

    The caller's socket has ``peer`` as its local end and ``ours`` as its remote end;
    the kernel looks it up in the TCP tables of this socket's network namespace.

    Returns:
        ``(True, entry)`` when the kernel answered (``entry`` None: no such socket in
        this namespace); ``(False, None)`` when it cannot be asked (no inet_diag), so
        the caller falls back to ``/proc/net/tcp``.
    """
    family = socket.AF_INET if isinstance(peer[0], ipaddress.IPv4Address) else socket.AF_INET6
    body = (
        _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + _SOCKID.pack(peer[1], ours[1], _packed(peer[0]), _packed(ours[0]))
        + _SOCKID_TAIL.pack(0, NO_COOKIE, NO_COOKIE)
    )
    try:
        kind, answer = diag_request(body)
    except DiagUnavailable:
        return False, None
    try:
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", answer)
            return (True, None) if code == -errno.ENOENT else (False, None)
        if kind != SOCK_DIAG_BY_FAMILY:
            return False, None
        _, state, _, _ = _DIAG_MSG_HEAD.unpack_from(answer)
        offset = _DIAG_MSG_HEAD.size
        sport, dport, src, dst = _SOCKID.unpack_from(answer, offset)
        offset += _SOCKID.size + _SOCKID_TAIL.size
        _, _, _, uid, inode = _DIAG_MSG_TAIL.unpack_from(answer, offset)
    except struct.error:
        return False, None
    if (sport, dport) != (peer[1], ours[1]) or not (
        _same_ip(src, peer[0]) and _same_ip(dst, ours[0])
    ):
        # No connection has this exact pair (the lookup would have found it first);
        # the kernel answered with a listener on the port instead.
        return True, None
    return True, TcpSocketEntry(local=peer, remote=ours, state=state, uid=uid, inode=inode)


def _net_namespace(pid: int | str) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise CallerGone("the calling process has exited") from exc
    except OSError as exc:
        raise CallerUnidentified("cannot read the caller's network namespace") from exc


def _still_holds(pid: int, inode: int) -> bool:
    return holds(f"/proc/{pid}/fd", f"socket:[{inode}]")


def _owner(pid: int) -> int | None:
    """The owner of ``/proc/<pid>`` (the uid an identity reports), None once it is gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def attribute_holders(
    holders: Collection[int], *, uid: int, owner: Callable[[int], int | None] = _owner
) -> list[int]:
    """Which of the holders one pass found for the caller's socket it is attributed to.

    The socket is identified only when exactly one pid is returned: its only holder,
    or, among several, the only one owned by ``uid``. The rule of the own passes of
    :func:`identify_tcp_peer` (holders of ``uid`` first, every holder when there is
    none), applied to a single pass.

    Args:
        holders: the pids one pass found holding the socket (a pid once per descriptor).
        uid: the socket's owner uid (from the kernel's socket table).
        owner: the owner uid of a process, None when it is gone (asked only when there
            are several holders).

    Returns:
        The distinct holders owned by ``uid`` if any, else every distinct holder.
    """
    pids = list(dict.fromkeys(holders))
    if len(pids) < 2:
        return pids
    own = [pid for pid in pids if owner(pid) == uid]
    return own or pids


def _holders_of_own_passes(entry: TcpSocketEntry) -> list[int]:
    holders = socket_holders(entry.inode, uid=entry.uid)
    if not holders:
        holders = socket_holders(entry.inode)
    return holders


def identify_tcp_peer(
    sock: socket.socket,
    *,
    cache: ExeHashCache,
    accepted_at: int,
    pod_wide: bool = False,
    scanner: HolderScanner | None = None,
    accepted_ns: int | None = None,
) -> CallerIdentity:
    """E2: the identity of the caller on a loopback TCP connection (blocking).

    Args:
        sock: an accepted AF_INET/AF_INET6 stream socket (not closed here).
        cache: the executable digest cache.
        accepted_at: :func:`attest.peercred.boot_ticks_now` at accept time.
        pod_wide: accept a caller whose process is not visible from here as
            "any process in this pod" (explicit policy; off by default).
        scanner: who reads the descriptor tables when ``accepted_ns`` is given; None
            for the one this process shares between all connections, E1's and E2's
            (:func:`attest.peercred.shared_scanner`).
        accepted_ns: ``time.monotonic_ns()`` read after ``accept()`` returned this
            connection (never before it). Given, the holders come from a pass of
            ``scanner`` that started after that moment, shared with the other
            connections accepted before it started; None: from passes of this call's
            own (module docstring).

    Raises:
        CallerNotLocal: an end is not loopback, or the caller's socket is not in
            this network namespace.
        CallerGone: the process exited during attestation.
        CallerUnidentified: the process is not visible (and ``pod_wide`` is off)
            or more than one process holds the socket; also when a shared pass
            failed or did not end in time (even with ``pod_wide``).
    """
    try:
        peer = _normalise(sock.getpeername())
        ours = _normalise(sock.getsockname())
    except (OSError, ValueError, IndexError) as exc:
        raise CallerUnidentified("cannot read the addresses of the connection") from exc
    if not (peer[0].is_loopback and ours[0].is_loopback):
        raise CallerNotLocal(f"peer {peer[0]} is not a loopback caller")
    answered, entry = sock_diag_lookup(peer=peer, ours=ours)
    if not answered:
        entries: list[TcpSocketEntry] = []
        for name in ("tcp", "tcp6"):
            try:
                text = Path(f"/proc/self/net/{name}").read_text()
            except FileNotFoundError:
                continue
            entries += parse_proc_net_tcp(text, ports=(peer[1], ours[1]))
        entry = find_peer_socket(entries, peer=peer, ours=ours)
    if entry is None or entry.state != _TCP_ESTABLISHED:
        raise CallerNotLocal("the caller's socket is not in this network namespace")
    peer_text = f"{peer[0]}:{peer[1]}"
    if accepted_ns is None:
        holders = _holders_of_own_passes(entry)
    else:
        # Never later than now: a reading from the future would make every pass too old.
        since = min(accepted_ns, time.monotonic_ns())
        found = (scanner or shared_scanner()).holders(entry.inode, since=since)
        holders = attribute_holders(found, uid=entry.uid)
    if len(holders) != 1:
        if pod_wide:
            return CallerIdentity(
                transport=Transport.TCP, process=None, pod_wide=True, peer_address=peer_text
            )
        why = "not visible from here" if not holders else "shared by several processes"
        raise CallerUnidentified(f"the calling process is {why}")
    pid = holders[0]
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError as exc:
        raise CallerGone("the calling process has exited") from exc
    try:
        if not _still_holds(pid, entry.inode):
            raise CallerGone("the calling process no longer holds the connection")
        if _net_namespace(pid) != _net_namespace("self"):
            raise CallerNotLocal("the calling process is in another network namespace")
        st = os.stat(f"/proc/{pid}")
        process: ProcessIdentity = identify_process(
            PeerCred(pid=pid, uid=st.st_uid, gid=st.st_gid),
            pidfd=pidfd,
            accepted_at=accepted_at,
            cache=cache,
        )
        if not _still_holds(pid, entry.inode):
            raise CallerGone("the calling process no longer holds the connection")
    except FileNotFoundError as exc:
        raise CallerGone("the calling process has exited") from exc
    finally:
        os.close(pidfd)
    return CallerIdentity(transport=Transport.TCP, process=process, peer_address=peer_text)
