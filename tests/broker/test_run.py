"""The broker run from its configuration file, wired to anvil, the SMTP sink and the signer.

The signer is the real one on a real mutual-TLS socket: an operator who signed up by email
signs in with the signer-held K4 wallet (``/v1/auth/siwe/k4``), and the broker publishes the
signer's OIDC key beside its own.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import trio

from agentkeys.broker import J1, BrokerConfig, BrokerService, run_broker
from agentkeys.cap import CapOp
from agentkeys.config import load_config
from agentkeys.devstack import pick_port
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.jwks import JsonWebKeySet
from agentkeys.omni import IdentityType, actor_omni_for_wallet, identity_omni
from agentkeys.service import BoundAddress, MemoryAudit, ServerSettings
from agentkeys.signer import KeyStore, OidcSettings, SignerService, SiwePin, StsExchanger
from attest.seal import SoftwareSealer
from tests.broker._flow import BrokerClient, b64d, bearer, email_stage, enroll, siwe_start
from tests.broker.conftest import ORIGIN, RP_ID, Chain, Device, Operator
from tests.broker.test_cap_mint import proof_for
from tests.service.conftest import Pki, make_pki


async def _start_signer(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, port: int | None = None
) -> str:
    """The signer; with ``port``, pinned to the SIWE relying party of a broker on it."""
    sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
    state_dir = tmp_path / "signer-state"
    await KeyStore.import_master_secret(state_dir, sealer, secrets.token_bytes(32))
    await KeyStore.import_k3(state_dir, sealer, 1, secrets.token_bytes(32))
    keys = await KeyStore.open(state_dir, sealer)
    service = SignerService(
        settings=ServerSettings(
            tls_cert=pki.cert("signer"), tls_key=pki.key("signer"), tls_client_ca=pki.ca
        ),
        keys=keys,
        epochs=chain.client,
        sts=StsExchanger(
            endpoint="http://127.0.0.1:9",
            role_arn="arn:aws:iam::role/none",
            region="us-east-1",
            duration_seconds=900,
        ),
        oidc=OidcSettings(issuer="http://127.0.0.1:9"),
        audit=MemoryAudit(),
        epoch_poll_interval=3600,
        siwe=None
        if port is None
        else SiwePin(
            domain=f"127.0.0.1:{port}",
            uri=f"http://127.0.0.1:{port}",
            chain_id=chain.deployment.chain_id,
        ),
    )
    bound: BoundAddress = await nursery.start(service.serve)
    return bound.url


def _write_config(
    tmp_path: Path, *, port: int, chain: Chain, smtp: SmtpSink, pki: Pki, signer_url: str
) -> Path:
    record = tmp_path / "deployment.json"
    chain.deployment.write(record)
    path = tmp_path / "broker.toml"
    path.write_text(
        f"""
[broker]
port = {port}

[state]
dir = "{tmp_path / "broker-state"}"

[site]
public_url = "http://127.0.0.1:{port}"
rp_id = "{RP_ID}"
origin = "{ORIGIN}"
chain_id = {chain.deployment.chain_id}

[email]
smtp_port = {smtp.port}

[chain]
rpc_url = "{chain.anvil.rpc_url}"
deployment = "{record}"
poll_interval = 0.05

[signer]
url = "{signer_url}"
ca = "{pki.ca}"
cert = "{pki.cert("broker")}"
key = "{pki.key("broker")}"
"""
    )
    path.chmod(0o600)
    return path


async def test_run_broker_from_config_with_the_signer(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink, operator: Operator
) -> None:
    pki = make_pki(tmp_path / "pki")
    port = pick_port()
    signer_url = await _start_signer(nursery, pki, chain, tmp_path, port)
    config = load_config(
        BrokerConfig,
        path=_write_config(
            tmp_path, port=port, chain=chain, smtp=smtp, pki=pki, signer_url=signer_url
        ),
        environ={},
    )
    service: BrokerService = await nursery.start(run_broker, config)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30
    ) as http:
        # the published OIDC keys: the broker's K2 and the signer's token key
        jwks = JsonWebKeySet.from_json((await http.get("/.well-known/jwks.json")).content)
        assert service.keys.oidc.active_kid in jwks.by_kid
        assert len(jwks.by_kid) == 2

        # an email-only operator signs in with its signer-held K4 wallet
        client = BrokerClient(http)
        email = "k4-user@example.org"
        j0 = await email_stage(client, smtp, email)
        passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
        await enroll(client, j0, Device.generate(), passkey)
        start = await siwe_start(client, j0)
        assertion = passkey.get(b64d(start["webauthn"]["challenge"])).to_json()
        response = await http.post(
            "/v1/auth/siwe/k4",
            json={"challenge_id": start["challenge_id"], "assertion": assertion},
            headers=bearer(j0),
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["actor_omni"] == actor_omni_for_wallet(answer["wallet"])
        identity = identity_omni(IdentityType.EMAIL, email)
        info = (await http.get("/v1/auth/session", headers=bearer(answer["session"]))).json()
        assert info["identity_omni"] == identity

        # the chain is wired: the registered operator's master mints for its own vault
        token, _session = await service.sessions.issue(
            stage=J1,
            subject=operator.omni,
            now=int(time.time()),
            lifetime=600,
            extra={"wallet": operator.wallet.address.lower()},
        )
        body = {
            "operator_omni": operator.omni,
            "actor_omni": operator.omni,
            "service": "openai",
            "device_key_hash": operator.master.hash,
            "pop": proof_for(CapOp.FETCH, operator.omni, operator.omni, "openai", operator.master),
        }
        minted = await http.post("/v1/cap/cred-fetch", json=body, headers=bearer(token))
        assert minted.status_code == 200, minted.text
        health = (await http.get("/v1/health")).json()
        assert health["relay"] is False
