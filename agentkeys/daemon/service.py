"""The daemon core: one object owning one nursery of supervised duties (SPEC.md section 8).

Duties, each a task in the nursery:

* ``listener`` — HTTP/1.1 (``agentkeys.http1.serve_attested``) over the Unix socket (0600 in 0700)
  and the optional loopback TCP listener, every connection attested (E1/E2) before a
  byte is read; on stop it closes idle connections and gives in-flight requests and
  streams ``listen.graceful_timeout`` seconds;
* ``heartbeat`` — probes the broker; the proxy fails closed outside the window;
* ``device-session`` — signs in to the broker with the device's K10 and renews the session
  (``agentkeys.daemon.session``), when the daemon has one;
* ``cache-expiry`` — drops expired credentials;
* ``policy-reload`` — re-reads the policy when the file changes (a bad file is logged and
  the previous policy stays);
* ``revocations`` — applies chain events (scope/device revoked) and wipes the cache;
* ``chain-watcher`` — follows the chain, when the daemon runs one;
* ``audit-shipping`` — hands audit batches to the chain audit relay, when one is set.

A duty that fails is logged and restarted with a back-off; one that fails
``max_failures`` times within ``failure_window`` seconds stops the daemon with
:class:`DutyFailed`. The listener is not restarted: its failure stops the daemon. On
every exit the cache is wiped and the audit log closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from agentkeys.chain.events import ScopeSet, WatcherEvent
from agentkeys.daemon._groups import raise_domain_error
from agentkeys.daemon._upstream import UpstreamPool, UpstreamTimeouts
from agentkeys.daemon.auditlog import AuditLog, AuditRelayQueue
from agentkeys.daemon.cache import CredentialCache
from agentkeys.daemon.config import DaemonConfig
from agentkeys.daemon.credentials import CredentialSource
from agentkeys.daemon.envfile import render_env, write_env_file
from agentkeys.daemon.errors import DutyFailed, PolicyInvalid
from agentkeys.daemon.heartbeat import BrokerLiveness, BrokerProbe, run_heartbeat
from agentkeys.daemon.policy import Policy, load_policy
from agentkeys.daemon.proxy import ProxyApp, ProxyLimits
from agentkeys.daemon.quota import QuotaBook
from agentkeys.daemon.revocation import RevocationState, changes_nothing
from agentkeys.daemon.session import DeviceSession, SessionProblem
from agentkeys.errors import DOMAIN_ERRORS, AgentkeysError
from agentkeys.http1 import ServeConfig, serve_attested
from attest.serve import CallerAttestor, create_loopback_listener, create_unix_listener

__all__ = ["AuditRelay", "Daemon", "DaemonAddress"]

_log = logging.getLogger("agentkeys.daemon")


class AuditRelay(Protocol):
    """The chain audit relay: receives batches of audit rows."""

    async def submit(self, rows: list[dict[str, object]]) -> None:
        """Ship ``rows``; raise an ``AgentkeysError`` to have them retried."""
        ...


@dataclass(frozen=True)
class DaemonAddress:
    """Where the daemon listens (given to ``task_status.started``)."""

    socket_path: str
    tcp_url: str | None


def _file_state(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Daemon:
    """The sidecar daemon (see the module docstring).

    Args:
        config: the frozen configuration.
        source: where credentials come from.
        probe: the broker heartbeat.
        session: the daemon's own device session (the source's), run as a duty; ``None``
            for a source that needs none.
        device_key_hash: this device's K10 hash (revocation events).
        events: chain events (a watcher subscription), or None.
        chain_watcher: runs the chain watcher (a duty), or None.
        chain_lag: the watcher's head lag in blocks (``ChainWatcher.head_lag``), reported
            on ``/metrics``, or None.
        relay: the chain audit relay, or None.
        max_failures, failure_window: when a failing duty stops the daemon.
        restart_delay: first back-off before a restart (doubling up to 30 s).
    """

    def __init__(
        self,
        *,
        config: DaemonConfig,
        source: CredentialSource,
        probe: BrokerProbe,
        session: DeviceSession | None = None,
        device_key_hash: str | None = None,
        events: trio.MemoryReceiveChannel[WatcherEvent] | None = None,
        chain_watcher: Callable[[], Awaitable[None]] | None = None,
        chain_lag: Callable[[], int | None] | None = None,
        relay: AuditRelay | None = None,
        max_failures: int = 5,
        failure_window: float = 60.0,
        restart_delay: float = 0.5,
    ) -> None:
        self.config = config
        self._source = source
        self._probe = probe
        self.session = session
        self._events = events
        self._chain_watcher = chain_watcher
        self._chain_lag = chain_lag
        self._relay = relay
        self._max_failures = max_failures
        self._failure_window = failure_window
        self._restart_delay = restart_delay
        self._stop = trio.Event()
        self.policy: Policy = load_policy(config.policy_path)
        self._policy_state = _file_state(config.policy_path)
        self.liveness = BrokerLiveness(config.broker.unreachable_after)
        self.cache = CredentialCache(
            ttl=config.cache.ttl,
            negative_ttl=config.cache.negative_ttl,
            revalidate=config.cache.revalidate,
            max_entries=config.cache.max_entries,
        )
        self.quotas = QuotaBook()
        self.revocations = RevocationState(
            operator_omni=config.identity.operator_omni,
            actor_omni=config.identity.actor_omni,
            device_key_hash=device_key_hash,
        )
        self.relay_queue = (
            AuditRelayQueue(config.audit.relay_queue, config.audit.relay_batch)
            if relay is not None
            else None
        )
        self.address: DaemonAddress | None = None
        self.app: ProxyApp | None = None

    def stop(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        self._stop.set()

    # -- serving --------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[DaemonAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run every duty until :meth:`stop` (graceful) or cancellation.

        Raises:
            DutyFailed: a duty failed too often.
            AuditLogError, InsecurePath, OSError: start-up failed (nothing was served).
        """
        cfg = self.config
        audit = AuditLog(cfg.audit_path, relay=self.relay_queue)
        sockets: list[socket.socket] = []
        created: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we made
        try:
            sockets.append(create_unix_listener(cfg.socket_path, group=cfg.socket_gid))
            made = os.stat(cfg.socket_path)
            created = (made.st_dev, made.st_ino)
            tcp_url = None
            if cfg.listen.tcp_port is not None:
                tcp = create_loopback_listener(cfg.listen.tcp_port, host=cfg.listen.tcp_host)
                sockets.append(tcp)
                host, port = tcp.getsockname()[:2]
                tcp_url = f"http://{host}:{port}"
            self.address = DaemonAddress(socket_path=str(cfg.socket_path), tcp_url=tcp_url)
            upstream = UpstreamPool(
                timeouts=UpstreamTimeouts(
                    connect=cfg.upstream.connect_timeout,
                    read=cfg.upstream.read_timeout,
                    write=cfg.upstream.write_timeout,
                    pool=cfg.upstream.connect_timeout,
                ),
                max_connections=cfg.upstream.max_connections,
            )
            try:
                self.app = ProxyApp(
                    policy=lambda: self.policy,
                    quotas=self.quotas,
                    cache=self.cache,
                    source=self._source,
                    liveness=self.liveness,
                    revocations=self.revocations,
                    audit=audit,
                    upstream=upstream,
                    actor=cfg.identity.actor_omni,
                    session=self.session,
                    limits=ProxyLimits(
                        max_body_bytes=cfg.listen.max_body_bytes,
                        body_timeout=cfg.listen.body_timeout,
                    ),
                )
                if self._chain_lag is not None:
                    self.app.metrics.chain_lag_from(self._chain_lag)
                self._write_env()
                with raise_domain_error():
                    async with trio.open_nursery() as nursery:
                        duty = self._supervise
                        nursery.start_soon(
                            duty,
                            "heartbeat",
                            partial(
                                run_heartbeat,
                                self._probe,
                                self.liveness,
                                interval=cfg.broker.heartbeat_interval,
                                probe_timeout=cfg.broker.heartbeat_timeout,
                            ),
                        )
                        if self.session is not None:
                            nursery.start_soon(duty, "device-session", self.session.run)
                        nursery.start_soon(duty, "cache-expiry", self._expire_cache)
                        nursery.start_soon(duty, "policy-reload", self._reload_policy)
                        if self._events is not None:
                            nursery.start_soon(duty, "revocations", self._revocations)
                        if self._chain_watcher is not None:
                            nursery.start_soon(duty, "chain-watcher", self._chain_watcher)
                        if self._relay is not None:
                            nursery.start_soon(duty, "audit-shipping", self._ship_audit)
                        await nursery.start(self._listen, nursery, sockets)
                        sockets = []
                        _log.info(
                            "agentkeys daemon listening on %s%s",
                            cfg.socket_path,
                            f" and {tcp_url}" if tcp_url else "",
                        )
                        task_status.started(self.address)
            finally:
                with trio.CancelScope(shield=True):
                    await upstream.aclose()
        finally:
            for sock in sockets:
                sock.close()
            if created is not None:
                # only our own file: another daemon may have bound this path since
                with contextlib.suppress(FileNotFoundError):
                    now = os.stat(cfg.socket_path)
                    if (now.st_dev, now.st_ino) == created:
                        os.unlink(cfg.socket_path)
            self.cache.clear()
            audit.close()
            _log.info("agentkeys daemon stopped; credential cache wiped")

    async def _listen(
        self,
        nursery: trio.Nursery,
        sockets: list[socket.socket],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        app = self.app
        assert app is not None  # built by serve() before the listener starts
        listen = self.config.listen
        await serve_attested(
            app,
            sockets,
            config=ServeConfig(
                keep_alive_timeout=listen.keep_alive_timeout,
                graceful_timeout=listen.graceful_timeout,
                max_connections=listen.max_connections,
            ),
            attestor=CallerAttestor(pod_wide=listen.pod_wide),
            shutdown_trigger=self._stop.wait,
            on_refused=app.record_refused,
            task_status=task_status,
        )
        # drained: the other duties end with the listener
        nursery.cancel_scope.cancel()

    async def _supervise(self, name: str, duty: Callable[[], Awaitable[None]]) -> None:
        """Run ``duty`` forever: restart it with back-off when it fails or returns.

        Raises:
            DutyFailed: ``max_failures`` within ``failure_window`` seconds; the nursery
                is cancelled and :meth:`serve` cleans up (cache wiped, log closed).
        """
        failures: deque[float] = deque()
        delay = self._restart_delay
        while True:
            cause: BaseException | None = None
            try:
                await duty()
                what = "returned"
            except Exception as exc:
                cause = exc
                what = exc.reason if isinstance(exc, DOMAIN_ERRORS) else type(exc).__name__
            now = time.monotonic()
            failures.append(now)
            while failures and failures[0] < now - self._failure_window:
                failures.popleft()
            _log.error(
                "duty %s failed (%d in %.0f s): %s", name, len(failures),
                self._failure_window, what,
            )  # fmt: skip
            if len(failures) >= self._max_failures:
                self.stop()
                raise DutyFailed(f"duty {name} failed {len(failures)} times") from cause
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # -- duties -----------------------------------------------------------------------------

    async def _expire_cache(self) -> None:
        while True:
            await trio.sleep(min(10.0, self.config.cache.ttl))
            if self.session is not None and self.session.problem() is SessionProblem.REVOKED:
                self.cache.clear()  # nothing is served again: keep no secret in memory
            self.cache.purge()

    async def _reload_policy(self) -> None:
        path = self.config.policy_path
        while True:
            await trio.sleep(self.config.policy.reload_interval)
            state = _file_state(path)
            if state == self._policy_state:
                continue
            self._policy_state = state
            try:
                policy = await trio.to_thread.run_sync(load_policy, path)
            except PolicyInvalid as exc:
                _log.error("policy reload refused, keeping the previous policy: %s", exc.reason)
                continue
            self.policy = policy
            self._write_env()
            _log.info("policy reloaded (sha256 %s)", policy.digest[:16])

    async def _revocations(self) -> None:
        assert self._events is not None
        async for event in self._events:
            result = self.revocations.apply(event)
            if changes_nothing(result):
                continue
            if isinstance(event, ScopeSet) and not self.revocations.device_revoked:
                # the chain scope is known by hash: wipe exactly the cached (or in-flight)
                # services it no longer holds; a fetch of a service still in scope goes on
                result = self.revocations.outside_scope(self.cache.services())
            dropped = "all services" if result is None else ", ".join(sorted(result))  # type: ignore[arg-type]
            _log.warning(
                "chain event %s: credential cache dropped for %s",
                type(event).__name__,
                dropped or "no service",
            )
            self.cache.drop(result)  # type: ignore[arg-type]

    async def _ship_audit(self) -> None:
        assert self._relay is not None
        assert self.relay_queue is not None
        while True:
            await trio.sleep(1.0)
            batch = self.relay_queue.take_batch()
            if not batch:
                continue
            try:
                await self._relay.submit(batch)
            except AgentkeysError as exc:
                self.relay_queue.requeue(batch)
                _log.warning("audit relay refused a batch (%d rows): %s", len(batch), exc.reason)
                await trio.sleep(5.0)

    def _write_env(self) -> None:
        if not self.config.env.write or self.address is None:
            return
        text = render_env(
            self.policy, base_url=self.address.tcp_url, socket_path=self.config.socket_path
        )
        try:
            write_env_file(self.config.env_path, text, group=self.config.socket_gid)
        except OSError as exc:
            _log.error(
                "cannot write the environment file %s: %s", self.config.env_path, exc.strerror
            )
