"""An email operator's first master device, registered through the broker's relay.

Real stack: anvil with the contracts, the SMTP sink, the signer over mutual TLS (K4), the
broker on a socket with a relay wallet. The operator signs in by email + passkey + K4 SIWE
(J1), then ``/v1/relay/first-master`` has the signer approve the registration with K4's
EIP-712 signature (after both the broker and the signer checked K10 and the passkey) and the
relay wallet submits it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from agentkeys.broker import J1, BrokerService, SignerK4Client
from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._keys import BrokerKeys
from agentkeys.broker._relay import Relay
from agentkeys.broker._store_sqlite import SqliteStateStore
from agentkeys.chain import challenge as ch
from agentkeys.chain.client import ChainClient
from agentkeys.chain.signing import k10_digest
from agentkeys.clients import SignerClient
from agentkeys.devstack import pick_port
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import IdentityType, actor_omni_for_wallet, identity_omni
from agentkeys.pki import Role
from agentkeys.service import BoundAddress, MemoryAudit, ServerSettings, mtls_client
from agentkeys.signer import KeyStore, OidcSettings, SignerService, SiwePin, StsExchanger
from attest.k10_signature import k10_raw_from_der
from attest.seal import SoftwareSealer
from tests.broker._flow import b64d, bearer, email_stage, enroll, siwe_start
from tests.broker.conftest import ORIGIN, RP_ID, Chain, Device, new_master
from tests.service.conftest import Pki, make_pki
from tests.services import build_broker

ROUTE = "/v1/relay/first-master"


async def _start_signer(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, port: int | None = None
) -> str:
    """The signer; with ``port``, pinned to the SIWE relying party of a broker on it."""
    sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
    state_dir = tmp_path / "signer-state"
    await KeyStore.import_master_secret(state_dir, sealer, secrets.token_bytes(32))
    await KeyStore.import_k3(state_dir, sealer, 1, secrets.token_bytes(32))
    service = SignerService(
        settings=ServerSettings(
            tls_cert=pki.cert("signer"), tls_key=pki.key("signer"), tls_client_ca=pki.ca
        ),
        keys=await KeyStore.open(state_dir, sealer),
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
        registry=chain.client,
    )
    bound: BoundAddress = await nursery.start(service.serve)
    return bound.url


@dataclass
class Stack:
    service: BrokerService
    http: httpx.AsyncClient
    audit: MemoryAudit


@asynccontextmanager
async def _stack(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink, *, relay: bool = True
) -> AsyncIterator[Stack]:
    pki = make_pki(tmp_path / "pki")
    port = pick_port()
    signer_url = await _start_signer(nursery, pki, chain, tmp_path, port)
    keys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, tmp_path / "broker")
    store = await SqliteStateStore.open(tmp_path / "broker" / "broker.sqlite3")
    audit = MemoryAudit()
    async with (
        httpx.AsyncClient(trust_env=False, timeout=30) as rpc_http,
        mtls_client(base_url=signer_url, ca=pki.ca, cert=pki.cert("broker"),
                    key=pki.key("broker"), expected_role=Role.SIGNER) as signer_http,
    ):  # fmt: skip
        client = ChainClient(rpc_http, chain.anvil.rpc_url, chain.deployment.addresses)
        service = build_broker(
            port=port, keys=keys, store=store, smtp=smtp, chain=CachedChainView(client),
            chain_id=chain.deployment.chain_id, audit=audit,
            k4=SignerK4Client(SignerClient(signer_http)),
            relay=Relay(client, chain.accounts[4]) if relay else None,
        )  # fmt: skip
        with trio.CancelScope() as scope:
            await nursery.start(service.serve)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30
            ) as http:
                yield Stack(service, http, audit)
            scope.cancel()
    await store.aclose()


@dataclass
class EmailOperator:
    j1: str
    wallet: str
    device: Device
    passkey: SoftAuthenticator
    identity: str


async def _email_operator(stack: Stack, smtp: SmtpSink, email: str) -> EmailOperator:
    """Stages 1-3 for an email-only operator: magic link, passkey bound to K10, K4 SIWE."""
    j0 = await email_stage(stack, smtp, email)
    device = Device.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    await enroll(stack, j0, device, passkey)
    start = await siwe_start(stack, j0)
    assertion = passkey.get(b64d(start["webauthn"]["challenge"])).to_json()
    response = await stack.http.post(
        "/v1/auth/siwe/k4",
        json={"challenge_id": start["challenge_id"], "assertion": assertion},
        headers=bearer(j0),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    identity = identity_omni(IdentityType.EMAIL, email)
    return EmailOperator(answer["session"], answer["wallet"], device, passkey, identity)


def _device_json(entry: ch.NewMaster) -> dict[str, object]:
    return {
        "k10_public_key": entry.k10_point.hex(),
        "k11_credential_id_hash": entry.k11_credential_id_hash.hex(),
        "k11_public_key": entry.k11_point.hex(),
        "rp_id_hash": entry.rp_id_hash.hex(),
        "roles": entry.roles,
    }


async def _registration(
    chain: Chain, wallet: str, device: Device, passkey: SoftAuthenticator
) -> dict[str, Any]:
    """What the new device signs (the same material as the sovereign path)."""
    entry = new_master(device, passkey)
    challenge = await chain.client.challenge_for(
        ch.OP_REGISTER_FIRST_MASTER,
        "SidecarRegistry",
        actor_omni_for_wallet(wallet),
        ch.first_master_params(wallet, entry),
    )
    der = await device.signer.sign_digest(k10_digest(challenge))
    return {
        "device": _device_json(entry),
        "k10_signature": k10_raw_from_der(der).hex(),
        "assertion": passkey.get(challenge).to_json(),
    }


async def test_email_operator_registers_its_first_master_through_the_relay(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        op = await _email_operator(stack, smtp, "relay-first@example.org")
        operator = actor_omni_for_wallet(op.wallet)
        assert await chain.client.master_wallet(operator) is None
        body = await _registration(chain, op.wallet, op.device, op.passkey)
        response = await stack.http.post(ROUTE, json=body, headers=bearer(op.j1))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["operator_omni"] == operator
        assert answer["device_key_hash"] == op.device.hash
        assert await chain.client.master_wallet(operator) == op.wallet
        entry = await chain.client.get_device(op.device.hash)
        assert entry is not None
        assert entry.operator_omni == operator
        assert not entry.revoked
        # the relay sent it, not the K4 wallet
        receipt = await chain.client.rpc.call("eth_getTransactionByHash", answer["tx_hash"])
        assert str(receipt["from"]).lower() == chain.accounts[4].address.lower()

        # replaying the same request registers nothing more
        again = await stack.http.post(ROUTE, json=body, headers=bearer(op.j1))
        assert again.status_code == 403
        assert again.json()["error"] == "relay_rejected"


async def test_relay_first_master_refusals(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        op = await _email_operator(stack, smtp, "relay-refused@example.org")
        other = await _email_operator(stack, smtp, "relay-other@example.org")

        # no session
        body = await _registration(chain, op.wallet, op.device, op.passkey)
        response = await stack.http.post(ROUTE, json=body)
        assert response.status_code == 401

        # a wallet operator's J1 (own wallet, no email identity): K4 is not its wallet
        wallet = chain.accounts[5].address.lower()
        token, _ = await stack.service.sessions.issue(
            stage=J1,
            subject=actor_omni_for_wallet(wallet),
            now=int(time.time()),
            lifetime=600,
            extra={"wallet": wallet},
        )
        response = await stack.http.post(ROUTE, json=body, headers=bearer(token))
        assert response.status_code == 403
        assert response.json()["error"] == "relay_rejected"
        # ... even when it names this email identity (an own-wallet SIWE J1 does)
        token, _ = await stack.service.sessions.issue(
            stage=J1,
            subject=actor_omni_for_wallet(wallet),
            now=int(time.time()),
            lifetime=600,
            extra={"wallet": wallet, "identity_omni": op.identity},
        )
        response = await stack.http.post(ROUTE, json=body, headers=bearer(token))
        assert response.status_code == 403
        assert response.json()["error"] == "relay_rejected"

        # the other operator's J1 with this operator's material: not its passkey
        response = await stack.http.post(ROUTE, json=body, headers=bearer(other.j1))
        assert response.status_code == 403
        assert response.json()["error"] == "passkey_not_enrolled"

        # a passkey never enrolled with the broker
        stranger = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
        fake = await _registration(chain, op.wallet, op.device, stranger)
        response = await stack.http.post(ROUTE, json=fake, headers=bearer(op.j1))
        assert response.status_code == 403
        assert response.json()["error"] == "passkey_not_enrolled"

        # the enrolled passkey, but with another K10 than the one it was enrolled with
        swapped = await _registration(chain, op.wallet, Device.generate(), op.passkey)
        response = await stack.http.post(ROUTE, json=swapped, headers=bearer(op.j1))
        assert response.status_code == 403
        assert response.json()["error"] == "relay_rejected"

        # material signed for the other operator's registration, presented by its own J1
        cross = await _registration(chain, other.wallet, op.device, op.passkey)
        response = await stack.http.post(ROUTE, json=cross, headers=bearer(op.j1))
        assert response.status_code == 401
        assert response.json()["error"] == "passkey_assertion_rejected"

        # nothing was registered by any of the above
        assert await chain.client.master_wallet(actor_omni_for_wallet(op.wallet)) is None
        assert await chain.client.master_wallet(actor_omni_for_wallet(other.wallet)) is None

        # and the valid request still goes through
        response = await stack.http.post(ROUTE, json=body, headers=bearer(op.j1))
        assert response.status_code == 200, response.text


async def test_relay_first_master_is_off_without_relay(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp, relay=False) as stack:
        op = await _email_operator(stack, smtp, "relay-off@example.org")
        body = await _registration(chain, op.wallet, op.device, op.passkey)
        response = await stack.http.post(ROUTE, json=body, headers=bearer(op.j1))
        assert response.status_code == 404
        assert response.json()["error"] == "relay_disabled"
        assert await chain.client.master_wallet(actor_omni_for_wallet(op.wallet)) is None
