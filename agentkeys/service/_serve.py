"""Serving a :class:`ServiceApp` with Hypercorn on 127.0.0.1, optionally over mutual TLS.

Hypercorn 0.18 puts nothing about the TLS peer certificate into the ASGI
scope (``hypercorn/protocol/http_stream.py`` builds ``extensions`` with only
trailers/push/early-hint, and ``hypercorn.trio.serve`` accepts through its own
``trio.SSLListener``). So this module accepts connections itself with
``trio.serve_listeners``, performs the TLS handshake, derives the caller's
:class:`Peer` from the verified client certificate
(:func:`agentkeys.pki.role_of_certificate`), and only then runs Hypercorn's
per-connection ``hypercorn.trio.tcp_server.TCPServer`` on the stream with an
app wrapper that places the peer in ``scope["extensions"]["agentkeys.peer"]``.
That class is internal to Hypercorn; the version is pinned (0.18.0) and
tests/service/test_serve.py is the regression test.

Lifespan (Quart-Trio's startup/shutdown and its background nursery) follows
``hypercorn/trio/run.py::worker_serve``; accepting, the bound on open
connections and the graceful shutdown are the one accept loop of every
listener (:func:`agentkeys.http1.serve_connections`): on the shutdown trigger
the listener stops, idle keep-alive connections are closed, and in-flight
requests get ``graceful_timeout`` seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket as stdlib_socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from agentkeys.config import ConfigError
from agentkeys.http1 import serve_connections
from agentkeys.pki import CertificateRejected, load_certificate, role_of_certificate
from agentkeys.pki import server_ssl_context as _server_ssl_context
from agentkeys.service._app import PEER_SCOPE_KEY, Peer, ServiceApp
from agentkeys.service._audit import AuditEvent

__all__ = ["BoundAddress", "ServerSettings", "ServerTls", "serve_http"]


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Listening options of one service (a config section, see agentkeys.config).

    ``host`` must be a loopback IP literal. TLS is on when ``tls_cert``,
    ``tls_key`` and ``tls_client_ca`` are all set (client certificates are then
    required); setting only some of them is an error.
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_body_bytes: int = 64 * 1024
    graceful_timeout: float = 5.0
    handshake_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 256
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    audit_log: Path | None = None

    def __post_init__(self) -> None:
        try:
            addr = ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise ConfigError(f"host {self.host!r} must be an IP address") from exc
        if not addr.is_loopback:
            raise ConfigError(f"host {self.host!r} is not a loopback address")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be within 0..65535")
        if self.max_body_bytes <= 0:
            raise ConfigError("max_body_bytes must be positive")
        if self.max_connections <= 0:
            raise ConfigError("max_connections must be positive")
        for name in ("graceful_timeout", "handshake_timeout", "keep_alive_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        tls = (self.tls_cert, self.tls_key, self.tls_client_ca)
        if any(v is not None for v in tls) and not all(v is not None for v in tls):
            raise ConfigError("tls_cert, tls_key and tls_client_ca must be set together")

    @property
    def tls_enabled(self) -> bool:
        """Whether the three TLS paths are set."""
        return self.tls_cert is not None


@dataclass(frozen=True)
class ServerTls:
    """The server's TLS context (client certificates required) and the deployment CA."""

    context: ssl.SSLContext
    ca: x509.Certificate

    @classmethod
    def from_files(cls, *, cert: Path, key: Path, client_ca: Path) -> ServerTls:
        """Load the server certificate, key and the CA that issues client certificates.

        Raises:
            agentkeys.pki.PkiFileError: unreadable or unsafe files.
        """
        return cls(
            context=_server_ssl_context(cert=cert, key=key, client_ca=client_ca),
            ca=load_certificate(client_ca),
        )

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ServerTls | None:
        """The TLS configuration ``settings`` asks for, or ``None`` for plain HTTP."""
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        assert settings.tls_client_ca is not None  # checked by ServerSettings
        return cls.from_files(
            cert=settings.tls_cert, key=settings.tls_key, client_ca=settings.tls_client_ca
        )


@dataclass(frozen=True)
class BoundAddress:
    """Where a server listens (given to ``task_status.started``)."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:4431``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class _PeerApp:
    """Hypercorn app wrapper that stamps one connection's :class:`Peer` on each request."""

    def __init__(self, inner: ASGIWrapper, peer: Peer) -> None:
        self._inner = inner
        self._peer = peer

    async def __call__(
        self, scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any
    ) -> None:
        extensions = scope.setdefault("extensions", {})
        extensions[PEER_SCOPE_KEY] = self._peer
        await self._inner(scope, receive, send, sync_spawn, call_soon)


def _hypercorn_config(settings: ServerSettings) -> HypercornConfig:
    config = HypercornConfig()
    config.keep_alive_timeout = settings.keep_alive_timeout
    config.graceful_timeout = settings.graceful_timeout
    config.ssl_handshake_timeout = settings.handshake_timeout
    config.read_timeout = 60
    config.accesslog = None
    config.errorlog = "-"
    return config


def _format_address(sock: Any) -> str | None:
    try:
        name = sock.getpeername()
    except OSError:
        return None
    if isinstance(name, tuple) and len(name) >= 2:
        host = f"[{name[0]}]" if ":" in name[0] else name[0]
        return f"{host}:{name[1]}"
    return None


def _tls_failure_reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "tls handshake timed out"
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return f"tls handshake failed: {cause.reason}"
    return "tls handshake failed"


async def serve_http(
    app: ServiceApp,
    settings: ServerSettings,
    *,
    tls: ServerTls | None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``settings.host:settings.port`` until cancelled or ``shutdown_trigger``.

    Calls ``task_status.started(BoundAddress)`` once the socket listens and
    the app's lifespan startup completed. When ``shutdown_trigger`` returns,
    shuts down gracefully and returns; cancellation stops at once.

    Args:
        app: the service application (its audit sink also receives refused
            TLS connections).
        settings: listening options.
        tls: mutual-TLS configuration, or ``None`` for plain HTTP (every
            caller is then anonymous).
        shutdown_trigger: returns when the server should stop.
        task_status: for ``nursery.start``.
    """
    hconfig = _hypercorn_config(settings)
    wrapped = ASGIWrapper(app)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, hconfig, lifespan_state)
    context = WorkerContext(None)

    family = (
        stdlib_socket.AF_INET6
        if ipaddress.ip_address(settings.host).version == 6
        else stdlib_socket.AF_INET
    )
    sock = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
    try:
        await sock.bind((settings.host, settings.port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    host, port = sock.getsockname()[:2]
    bound = BoundAddress(host=host, port=port, tls=tls is not None)

    async def refuse(peer_address: str | None, reason: str) -> None:
        await app.audit.record(
            AuditEvent(
                service=app.name,
                kind="connection_refused",
                outcome="denied",
                peer_role=None,
                peer_address=peer_address,
                error="connection_refused",
                reason=reason,
            )
        )

    async def refuse_busy(stream: trio.SocketStream) -> None:
        await refuse(_format_address(stream.socket), "too many connections")
        await trio.aclose_forcefully(stream)

    async def serve_connection(stream: trio.SocketStream) -> None:
        address = _format_address(stream.socket)
        if tls is None:
            await TCPServer(
                _PeerApp(wrapped, Peer(role=None, address=address)),
                hconfig,
                context,
                lifespan_state.copy(),
                stream,  # type: ignore[arg-type]  # TCPServer handles plain streams too
            ).run()
            return
        ssl_stream = trio.SSLStream(stream, tls.context, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(settings.handshake_timeout):
                await ssl_stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as exc:
            await refuse(address, _tls_failure_reason(exc))
            await trio.aclose_forcefully(ssl_stream)
            return
        der = ssl_stream.getpeercert(binary_form=True)
        try:
            if not der:
                raise CertificateRejected("no client certificate")
            role = role_of_certificate(der, tls.ca)
        except CertificateRejected as exc:
            await refuse(address, exc.reason)
            await trio.aclose_forcefully(ssl_stream)
            return
        peer = Peer(role=role, address=address, certificate_sha256=hashlib.sha256(der).hexdigest())
        await TCPServer(
            _PeerApp(wrapped, peer), hconfig, context, lifespan_state.copy(), ssl_stream
        ).run()

    async def drain() -> None:
        await context.terminated.set()  # Hypercorn's servers close their idle connections

    try:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            await serve_connections(
                serve_connection,
                [listener],
                max_connections=settings.max_connections,
                refuse=refuse_busy,
                drain=drain,
                graceful_timeout=settings.graceful_timeout,
                shutdown_trigger=shutdown_trigger,
                started=partial(task_status.started, bound),
            )
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
