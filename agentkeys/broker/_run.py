"""Running the broker from its configuration with the real dependencies wired in.

Wires: the state store (SQLite under ``state.dir``, or PostgreSQL) and the keys (key files
under ``state.dir``, or the shared key set in the store, refreshed by a task beside the
service), SMTP, the chain client and
watcher (JSON-RPC over httpx) into the cached chain view, the relay wallet when relay mode is
enabled, and, when ``[signer]`` is configured, the signer's client over mutual TLS (K4 SIWE for
email identities; the signer's OIDC key in the published JWKS).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from functools import partial
from typing import Any

import httpx
import trio

from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._email import SmtpMailer
from agentkeys.broker._keys import BrokerKeys, KeySeal, SharedKeySet
from agentkeys.broker._relay import Relay
from agentkeys.broker._service import BrokerService
from agentkeys.broker._store_postgres import PostgresStateStore
from agentkeys.broker._store_sql import SqlStateStore
from agentkeys.broker._store_sqlite import SqliteStateStore
from agentkeys.broker.config import BrokerConfig
from agentkeys.broker.errors import K4ApprovalRefused, SignerFailed, SignerUnavailable
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.clients.errors import ClientError, PeerRefused, PeerUnreachable, PeerUntrusted
from agentkeys.clients.signer import SignerClient
from agentkeys.config import check_private_file
from agentkeys.pki import Role
from agentkeys.service import AuditSink, BoundAddress, JsonLinesAudit, MemoryAudit, mtls_client

__all__ = ["SignerK4Client", "open_keys", "open_state_store", "run_broker"]


class SignerK4Client:
    """The broker's :class:`~agentkeys.broker.K4Signer` (K4) and OIDC JWKS, from the signer.

    Calls go through ``signer`` (:class:`agentkeys.clients.SignerClient`, mTLS, role
    ``broker``); :func:`_signer_failures` says what a failure means to the broker: not
    reached or not trusted is :class:`SignerUnavailable` (503), any other failure
    :class:`SignerFailed` (502), and a 4xx refusal of K4's first-master approval
    :class:`K4ApprovalRefused` (403).
    """

    def __init__(self, signer: SignerClient) -> None:
        self._signer = signer

    async def k4_address(self, identity_omni: str) -> str:
        """See :class:`agentkeys.broker.K4Signer`."""
        with _signer_failures():
            return await self._signer.k4_address(identity_omni)

    async def k4_siwe_sign(self, identity_omni: str, message: str) -> str:
        """See :class:`agentkeys.broker.K4Signer`."""
        with _signer_failures():
            return await self._signer.k4_siwe_sign(identity_omni, message)

    async def k4_register_first_master(
        self,
        identity_omni: str,
        device: Mapping[str, object],
        k10_signature: str,
        assertion: Mapping[str, object],
    ) -> dict[str, Any]:
        """See :class:`agentkeys.broker.K4Signer`.

        Raises:
            K4ApprovalRefused: the signer refused (4xx; its error code is in the reason).
            SignerFailed: 5xx or a malformed answer; SignerUnavailable (a SignerFailed) when
                the signer is not reached.
        """
        with _signer_failures(approval=True):
            return await self._signer.k4_register_first_master(
                identity_omni, device, k10_signature, assertion
            )

    async def oidc_keys(self) -> list[dict[str, str]]:
        """The signer's OIDC token-signing keys (public JWKs)."""
        with _signer_failures():
            return await self._signer.oidc_keys()


@contextmanager
def _signer_failures(*, approval: bool = False) -> Iterator[None]:
    """Re-raise a signer client's failure as the broker's error (see :class:`SignerK4Client`);
    ``approval``: a 4xx ``{error, reason}`` is the signer refusing K4's approval."""
    try:
        yield
    except PeerUnreachable as exc:
        raise SignerUnavailable(f"the signer is unreachable ({exc.transport})") from None
    except PeerUntrusted as exc:  # a TLS failure: as unreachable, as the broker always had it
        raise SignerUnavailable(f"the signer is unreachable ({exc.failure})") from None
    except PeerRefused as exc:
        refused = exc.code is not None or exc.peer_reason is not None
        if approval and 400 <= exc.http_status < 500 and refused:
            code = exc.code or "refused"
            raise K4ApprovalRefused(f"the signer refused K4's approval ({code})") from None
        raise SignerFailed(f"the signer answered {exc.http_status}") from None
    except ClientError as exc:
        raise SignerFailed(exc.reason) from None


async def open_state_store(config: BrokerConfig) -> SqlStateStore:
    """The configured state store, opened and migrated (the caller closes it).

    Raises:
        InsecureFileError: the SQLite directory, or the password file, is open to others.
        StoreError: the store cannot be opened.
    """
    state = config.state
    if state.backend == "sqlite":
        return await SqliteStateStore.open(state.dir / "broker.sqlite3")
    assert state.dsn is not None  # StateSettings guarantees it
    password = None
    if state.password_file is not None:
        await trio.to_thread.run_sync(check_private_file, state.password_file)
        text = await trio.to_thread.run_sync(state.password_file.read_text)
        password = text.rstrip("\r\n")
    return await PostgresStateStore.open(state.dsn, password=password, pool_size=state.pool_size)


async def open_keys(
    config: BrokerConfig, store: SqlStateStore
) -> tuple[BrokerKeys, SharedKeySet | None]:
    """The configured keys: key files, or the shared set in ``store`` (then also returned:
    run its ``run`` beside the service to follow rotations)."""
    if not config.keys_in_store:
        return await trio.to_thread.run_sync(BrokerKeys.load_or_create, config.state.dir), None
    shared = await SharedKeySet.open(
        store, await KeySeal.open(config.seal_key_file),
        publish_lead=config.keys.publish_lead, overlap=config.key_lifetimes(),
        refresh_interval=config.keys.refresh_interval,
    )  # fmt: skip
    return shared.keys, shared


async def run_broker(
    config: BrokerConfig,
    *,
    task_status: trio.TaskStatus[BrokerService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open state and keys, connect to the chain (and signer), serve until cancelled.

    ``task_status.started`` receives the running :class:`BrokerService`.

    Raises:
        InsecureFileError, StoreError, ChainConfigError, PkiFileError: start-up failures.
    """
    async with AsyncExitStack() as stack:
        store = await open_state_store(config)
        stack.push_async_callback(store.aclose)
        keys, shared_keys = await open_keys(config, store)
        audit: AuditSink = MemoryAudit()
        if config.broker.audit_log is not None:
            file_audit = JsonLinesAudit(config.broker.audit_log)
            stack.callback(file_audit.close)
            audit = file_audit
        deployment = await trio.to_thread.run_sync(read_deployment_record, config.chain.deployment)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0, trust_env=False))
        client = ChainClient(http, config.chain.rpc_url, deployment.addresses)
        watcher = ChainWatcher(
            client.rpc,
            deployment.addresses,
            start_block=deployment.block_number,
            confirmations=config.chain.confirmations,
            poll_interval=config.chain.poll_interval,
            max_log_range=config.chain.max_log_range,
        )
        view = CachedChainView(client, max_staleness=config.chain.cache_staleness)
        relay = None
        if config.relay.enabled and config.relay.key_file is not None:
            key_file = config.relay.key_file
            await trio.to_thread.run_sync(check_private_file, key_file)
            text = (await trio.to_thread.run_sync(key_file.read_text)).strip()
            relay = Relay(client, account_from_key(text), batch_size=config.relay.batch_size)
        signer = None
        link = config.signer
        if link.url is not None and link.ca and link.cert and link.key:
            signer_http = await stack.enter_async_context(
                mtls_client(
                    base_url=link.url,
                    ca=link.ca,
                    cert=link.cert,
                    key=link.key,
                    expected_role=Role.SIGNER,
                )
            )
            signer = SignerK4Client(SignerClient(signer_http))
        service = BrokerService(
            settings=config.broker,
            site=config.site,
            email=config.email,
            caps=config.caps,
            oidc=config.oidc,
            keys=keys,
            store=store,
            mailer=SmtpMailer(
                host=config.email.smtp_host,
                port=config.email.smtp_port,
                sender=config.email.sender,
                starttls=config.email.starttls,
                timeout=config.email.timeout,
            ),
            chain=view,
            audit=audit,
            follow=partial(view.follow, watcher, poll_interval=config.chain.poll_interval),
            k4=signer,
            extra_oidc_jwks=signer.oidc_keys if signer is not None else None,
            relay=relay,
        )
        async with trio.open_nursery() as nursery:
            if shared_keys is not None:
                await nursery.start(shared_keys.run)

            async def serve(*, task_status: trio.TaskStatus[BoundAddress]) -> None:
                await service.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # the key refresher ends with the service

            await nursery.start(serve)
            task_status.started(service)
