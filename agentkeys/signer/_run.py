"""Running the signer from its configuration with the real dependencies wired in.

Wires: the attest sealing backend (``attest.seal.open_sealer``: TPM when
configured/reachable, else the software key file), the chain's
K3EpochCounter through ``agentkeys.chain.client.ChainClient`` over httpx,
STS through boto3, and a JSON-lines audit file.
"""

from __future__ import annotations

import urllib.parse

import httpx
import trio

from agentkeys.chain.client import ChainClient
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.service import BoundAddress, JsonLinesAudit, MemoryAudit
from agentkeys.service._audit import AuditSink
from agentkeys.signer._keystore import KeyStore
from agentkeys.signer._service import SignerService
from agentkeys.signer._siwe import SiwePin
from agentkeys.signer._sts import StsExchanger
from agentkeys.signer.config import SignerConfig

__all__ = ["run_signer", "siwe_pin"]


def siwe_pin(config: SignerConfig, chain_id: int) -> SiwePin:
    """The configured SIWE relying party, defaults filled from ``oidc.issuer`` (the broker's
    public URL: its SIWE domain is that URL's host:port, its SIWE URI the URL itself) and
    the deployment's ``chain_id``."""
    issuer = urllib.parse.urlsplit(config.oidc.issuer)
    return SiwePin(
        domain=config.siwe.domain or issuer.netloc,
        uri=config.siwe.uri or config.oidc.issuer,
        chain_id=config.siwe.chain_id or chain_id,
        max_lifetime=config.siwe.max_lifetime,
    )


async def run_signer(
    config: SignerConfig,
    *,
    task_status: trio.TaskStatus[SignerService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the sealed keys, connect to the chain and serve until cancelled.

    ``task_status.started`` receives the running :class:`SignerService`
    (its ``app``, ``current_epoch`` and ``shutdown``).

    Raises:
        KeyStoreError, ChainConfigError, PkiFileError, TpmUnavailable: start-up failures.
    """
    from attest.seal import open_sealer

    sealer = await open_sealer(
        config.keys.seal_backend,
        key_path=config.keys.seal_key_file,
        tcti=config.keys.tpm_tcti,
    )
    audit: AuditSink
    file_audit = (
        JsonLinesAudit(config.signer.audit_log) if config.signer.audit_log is not None else None
    )
    audit = file_audit if file_audit is not None else MemoryAudit()
    try:
        keys = await KeyStore.open(config.keys.state_dir, sealer)
        deployment = await trio.to_thread.run_sync(read_deployment_record, config.chain.deployment)
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            chain = ChainClient(http, config.chain.rpc_url, deployment.addresses)
            service = SignerService(
                settings=config.signer,
                keys=keys,
                epochs=chain,
                sts=StsExchanger(
                    endpoint=config.sts.endpoint,
                    role_arn=config.sts.role_arn,
                    region=config.sts.region,
                    duration_seconds=config.sts.duration_seconds,
                ),
                oidc=config.oidc,
                audit=audit,
                epoch_poll_interval=config.chain.epoch_poll_interval,
                registry=chain,
                siwe=siwe_pin(config, deployment.chain_id),
            )
            async with trio.open_nursery() as nursery:
                _: BoundAddress = await nursery.start(service.serve)
                task_status.started(service)
    finally:
        if file_audit is not None:
            file_audit.close()
        with trio.CancelScope(shield=True):
            await sealer.aclose()
