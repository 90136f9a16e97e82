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

All of this is blocking ``/proc`` I/O: run :func:`identify_tcp_peer` in a thread.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from attest.caller import CallerIdentity, ProcessIdentity, Transport
from attest.errors import CallerGone, CallerNotLocal, CallerUnidentified
from attest.peercred import ExeHashCache, PeerCred, identify_process

_PROC = Path("/proc")
_TCP_ESTABLISHED = 0x01

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


def parse_proc_net_tcp(text: str) -> list[TcpSocketEntry]:
    """Parse the text of ``/proc/net/tcp`` or ``/proc/net/tcp6`` (header line skipped).

    Raises:
        CallerUnidentified: a row does not have the kernel's format.
    """
    entries = []
    for line in text.splitlines()[1:]:
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


def socket_holders(inode: int, proc: Path = _PROC) -> list[int]:
    """Pids whose descriptor table holds ``socket:[inode]`` (those visible from here)."""
    target = f"socket:[{inode}]"
    pids = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"{entry.path}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) == target:
                        pids.append(int(entry.name))
                        break
                except OSError:
                    continue
    return pids


def _net_namespace(pid: int | str) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise CallerGone("the calling process has exited") from exc
    except OSError as exc:
        raise CallerUnidentified("cannot read the caller's network namespace") from exc


def _still_holds(pid: int, inode: int) -> bool:
    try:
        return any(
            os.readlink(fd.path) == f"socket:[{inode}]"
            for fd in os.scandir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def identify_tcp_peer(
    sock: socket.socket,
    *,
    cache: ExeHashCache,
    accepted_at: int,
    pod_wide: bool = False,
) -> CallerIdentity:
    """E2: the identity of the caller on a loopback TCP connection (blocking).

    Args:
        sock: an accepted AF_INET/AF_INET6 stream socket (not closed here).
        cache: the executable digest cache.
        accepted_at: :func:`attest.peercred.boot_ticks_now` at accept time.
        pod_wide: accept a caller whose process is not visible from here as
            "any process in this pod" (explicit policy; off by default).

    Raises:
        CallerNotLocal: an end is not loopback, or the caller's socket is not in
            this network namespace.
        CallerGone: the process exited during attestation.
        CallerUnidentified: the process is not visible (and ``pod_wide`` is off)
            or more than one process holds the socket.
    """
    try:
        peer = _normalise(sock.getpeername())
        ours = _normalise(sock.getsockname())
    except (OSError, ValueError, IndexError) as exc:
        raise CallerUnidentified("cannot read the addresses of the connection") from exc
    if not (peer[0].is_loopback and ours[0].is_loopback):
        raise CallerNotLocal(f"peer {peer[0]} is not a loopback caller")
    entries: list[TcpSocketEntry] = []
    for name in ("tcp", "tcp6"):
        try:
            entries += parse_proc_net_tcp(Path(f"/proc/self/net/{name}").read_text())
        except FileNotFoundError:
            continue
    entry = find_peer_socket(entries, peer=peer, ours=ours)
    if entry is None:
        raise CallerNotLocal("the caller's socket is not in this network namespace")
    peer_text = f"{peer[0]}:{peer[1]}"
    holders = socket_holders(entry.inode)
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
