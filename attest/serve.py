"""Serve an ASGI app over HTTP/1.1, attesting every connection's caller first.

This module accepts connections itself (``trio.serve_listeners`` over sockets it is
given), attests the peer of each connection (E1 for Unix sockets, E2 for loopback TCP)
*before* reading a byte from it, and then serves HTTP/1.1 on the stream with the lean
server of :mod:`attest._http1` (h11, one task per connection). Every HTTP scope of that
connection carries the identity as ``scope["extensions"]["agentkeys.caller"]``; read it
with :func:`caller_from_scope`. A connection whose caller cannot be attested gets a 403
and is closed; the app never sees it. Beyond ``ServeConfig.max_connections`` open
connections, a new one gets a 503 and is closed before it is attested.

Order of events: lifespan startup, then serving; once the shutdown trigger fires,
accepting stops, idle connections close, requests in progress get
``config.graceful_timeout`` seconds, then lifespan shutdown.

Why not Hypercorn here (the services use it): the sidecar daemon's request path must
add well under a millisecond, and Hypercorn's per-connection server (a reader task,
a task and timers per request, separate writes for head and body) costs ~0.35-0.4 ms
per request on the 2-core reference machine, most of that budget; this server ~0.1 ms
(docs/performance.md, ``http c=*`` rows).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from attest._files import check_private_dir, ensure_private_dir
from attest._http1 import BUSY_RESPONSE, Http1Server, ServeConfig, lifespan, serve_refusing
from attest.caller import CallerIdentity, Transport
from attest.errors import AttestError, CallerUnidentified, InsecurePath, TooManyConnections
from attest.netns import identify_tcp_peer
from attest.peercred import ExeHashCache, boot_ticks_now, identify_unix_peer

__all__ = [
    "SCOPE_KEY",
    "CallerAttestor",
    "ServeConfig",
    "caller_from_scope",
    "create_loopback_listener",
    "create_unix_listener",
    "serve_attested",
]

SCOPE_KEY = "agentkeys.caller"

_log = logging.getLogger(__name__)
_REFUSAL_BODY = b'{"error":"caller_unidentified","reason":"the caller could not be attested"}'
_REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


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
    """The attested caller of an ASGI request served by :func:`serve_attested`.

    Raises:
        CallerUnidentified: the scope carries no identity (fail closed).
    """
    caller = scope.get("extensions", {}).get(SCOPE_KEY)
    if not isinstance(caller, CallerIdentity):
        raise CallerUnidentified("the request carries no attested caller")
    return caller


async def serve_attested(
    app: Any,
    sockets: Sequence[socket.socket],
    *,
    config: ServeConfig | None = None,
    attestor: CallerAttestor | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    on_refused: Callable[[AttestError], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on listening ``sockets``, attesting every caller.

    Args:
        app: an ASGI 3 application (e.g. a ``quart_trio.QuartTrio``, or the daemon's
            bare proxy app).
        sockets: listening sockets (from :func:`create_unix_listener`, or a TCP
            socket bound to 127.0.0.1). Ownership passes here: they are closed
            when serving ends.
        config: bounds and timeouts.
        attestor: how callers are attested; a default one when None.
        shutdown_trigger: when it returns, stop accepting, close idle connections, let
            requests in progress finish for ``config.graceful_timeout`` seconds, run
            lifespan shutdown and return. Cancelling the call stops at once instead.
        on_refused: told of every connection refused before the app saw it
            (:class:`CallerUnidentified` or a leaf, :class:`TooManyConnections`), e.g.
            to audit it; it must not block.
        task_status: ``started()`` once the app's startup ran and sockets accept.

    Raises:
        LifespanFailed: the app's lifespan startup failed.
    """
    config = config or ServeConfig()
    attestor = attestor or CallerAttestor()
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]

    try:
        async with lifespan(
            app, startup_timeout=config.startup_timeout, shutdown_timeout=config.graceful_timeout
        ) as state:
            server = Http1Server(app, config, state)

            async def handle(stream: trio.SocketStream) -> None:
                # the slot is held from the accept on: connections being attested count
                if not server.reserve():
                    await _refuse(stream, TooManyConnections("too many open connections"))
                    return
                try:
                    try:
                        caller = await attestor.identify(stream.socket)  # type: ignore[arg-type]
                    except CallerUnidentified as exc:
                        await _refuse(stream, exc)
                        return
                    except Exception:
                        # fail closed, and one connection never ends serving
                        _log.exception("attesting a connection failed")
                        await _refuse(stream, CallerUnidentified("attestation failed"))
                        return
                    await server.serve(stream, {SCOPE_KEY: caller})
                except Exception:
                    _log.exception("serving a connection failed")
                finally:
                    server.release()

            async def _refuse(stream: trio.SocketStream, refusal: AttestError) -> None:
                _log.warning("refused a connection: %s", refusal.reason)
                if on_refused is not None:
                    on_refused(refusal)
                response = BUSY_RESPONSE if isinstance(refusal, TooManyConnections) else _REFUSAL
                await serve_refusing(stream, response)

            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    serve = partial(trio.serve_listeners, handler_nursery=connections)
                    accepting.start_soon(serve, handle, listeners)
                    task_status.started()
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
                server.drain()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
