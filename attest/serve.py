"""The attested side of a listener: private sockets, and who is at the other end.

* :func:`create_unix_listener` (E1) and :func:`create_loopback_listener` (E2) make the
  listening sockets callers are attested on;
* :class:`CallerAttestor` attests the peer of an accepted connection (E1 for Unix
  sockets, E2 for loopback TCP) before a byte is read from it;
* :func:`caller_from_scope` reads the identity back from an ASGI scope, where the server
  put it under :data:`SCOPE_KEY`.

Serving HTTP on the attested connection is not attest's: the daemon's listener
(``agentkeys.http1.serve_attested``) accepts, calls :meth:`CallerAttestor.identify` and
serves the stream.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from attest._files import check_private_dir, ensure_private_dir
from attest.caller import CallerIdentity, Transport
from attest.errors import CallerUnidentified, InsecurePath
from attest.netns import identify_tcp_peer
from attest.peercred import ExeHashCache, boot_ticks_now, identify_unix_peer

__all__ = [
    "SCOPE_KEY",
    "CallerAttestor",
    "caller_from_scope",
    "create_loopback_listener",
    "create_unix_listener",
]

SCOPE_KEY = "agentkeys.caller"
"""Where a listener puts the :class:`CallerIdentity` in ``scope["extensions"]``."""


def create_unix_listener(
    path: Path, *, backlog: int = 128, group: int | None = None
) -> socket.socket:
    """Create a listening AF_UNIX socket at ``path``: mode 0600 in a 0700 directory.

    The parent directory is created 0700 (or must already be a 0700 directory
    owned by us), so nobody else can reach the socket between ``bind`` and
    ``chmod``; the socket listens only after its mode is 0600. No umask change.
    A stale socket at ``path`` is replaced; any other file there is refused.

    With ``group`` (a gid this process is root in or a member of) the directory is 0710
    and the socket 0660, both of that group, so its members can connect (the caller is
    still attested per connection). The socket is 0600 until its group is set, and
    listens only once its mode is final: it is never wider than 0660 of that group.

    Returns:
        The listening socket; the caller owns it (close it, and unlink ``path``).

    Raises:
        InsecurePath: the directory is not private, or ``path`` is not a socket.
    """
    ensure_private_dir(path.parent, group=group)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise InsecurePath(f"{path} exists and is not a socket; refusing to replace it")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        if group is not None:
            os.chown(path, -1, group)
            os.chmod(path, 0o660)
        check_private_dir(path.parent, group=group)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def create_loopback_listener(
    port: int, *, host: str = "127.0.0.1", backlog: int = 128
) -> socket.socket:
    """A listening TCP socket on a loopback address only (E2 container deployments).

    Raises:
        InsecurePath: ``host`` is not a loopback address.
    """
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecurePath(f"refusing to listen on non-loopback address {host}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class CallerAttestor:
    """Attests the peer of an accepted socket (E1 or E2); shared by all connections.

    Attributes:
        pod_wide: E2 policy "any process in this pod" for loopback callers whose
            process is not visible from here.
        use_pidfd: pin pids with SO_PEERPIDFD when the kernel has it.
        cache: executable digests, bounded.
        limiter: bounds the worker threads doing ``/proc`` I/O and hashing.
    """

    pod_wide: bool = False
    use_pidfd: bool = True
    cache: ExeHashCache = field(default_factory=ExeHashCache)
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(4))

    def identify_blocking(
        self, sock: socket.socket, accepted_at: int, accepted_ns: int | None = None
    ) -> CallerIdentity:
        """Attest ``sock``'s peer now (blocking).

        Args:
            sock: the accepted connection.
            accepted_at: boot ticks read after the accept (start-time checks).
            accepted_ns: ``time.monotonic_ns()`` read after the accept: lets E1's and
                E2's descriptor-table pass be shared with other connections accepted
                before it started (None: a pass of its own).

        Raises:
            CallerUnidentified (or a leaf): refuse the connection.
        """
        try:
            if sock.family == socket.AF_UNIX:
                process = identify_unix_peer(
                    sock,
                    cache=self.cache,
                    accepted_at=accepted_at,
                    use_pidfd=self.use_pidfd,
                    accepted_ns=accepted_ns,
                )
                return CallerIdentity(transport=Transport.UNIX, process=process)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return identify_tcp_peer(
                    sock,
                    cache=self.cache,
                    accepted_at=accepted_at,
                    pod_wide=self.pod_wide,
                    accepted_ns=accepted_ns,
                )
        except OSError as exc:
            # Anything /proc refuses (hidepid, a vanished entry) means "not attested".
            raise CallerUnidentified(f"cannot attest the caller: {exc.strerror}") from exc
        except ValueError as exc:
            # /proc content the parsers did not expect (the caller chooses some of it)
            raise CallerUnidentified("cannot attest the caller: unexpected /proc data") from exc
        raise CallerUnidentified("unsupported socket family")

    async def identify(self, sock: socket.socket) -> CallerIdentity:
        """Attest ``sock``'s peer in a worker thread (call it right after the accept)."""
        accepted_at = boot_ticks_now()
        accepted_ns = time.monotonic_ns()
        return await trio.to_thread.run_sync(
            self.identify_blocking, sock, accepted_at, accepted_ns, limiter=self.limiter
        )


def caller_from_scope(scope: Mapping[str, Any]) -> CallerIdentity:
    """The attested caller of an ASGI request (put there under :data:`SCOPE_KEY`).

    Raises:
        CallerUnidentified: the scope carries no identity (fail closed).
    """
    caller = scope.get("extensions", {}).get(SCOPE_KEY)
    if not isinstance(caller, CallerIdentity):
        raise CallerUnidentified("the request carries no attested caller")
    return caller
