"""K4's first-master approval (``/k4/register-first-master``) over real mTLS and real anvil.

The signer rebuilds the registration challenge from the chain, checks the new device's K10
signature and passkey assertion over it itself, and only then signs the SidecarRegistry's
EIP-712 RegisterFirstMaster with the identity's K4; a relay account submits it and the
contract accepts it. Everything else is refused: no fresh assertion, a replayed one, material
for another identity, a registered operator, any other kind of signing request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.chain import challenge as ch
from agentkeys.chain.client import SignedMutation, account_from_key
from agentkeys.chain.signing import (
    SoftwareK10Signer,
    encode_k10_sig,
    encode_k11_assertion,
    k10_digest,
)
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet
from agentkeys.service import BoundAddress, MemoryAudit, ServerSettings
from agentkeys.signer import KeyStore, OidcSettings, SignerService, StsExchanger
from attest.k10_signature import k10_raw_from_der
from attest.seal import SoftwareSealer
from tests.service.conftest import Pki
from tests.signer.conftest import Chain, RunningSigner, seed_state

RP_ID = "localhost"
ORIGIN = "http://localhost:8080"
ROUTE = "/k4/register-first-master"


async def _start(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, *, registry: bool = True
) -> RunningSigner:
    sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
    state_dir = tmp_path / f"signer-state-{secrets.token_hex(4)}"
    await seed_state(state_dir, sealer)
    audit = MemoryAudit()
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
        oidc=OidcSettings(issuer="http://127.0.0.1:9/issuer"),
        audit=audit,
        epoch_poll_interval=3600,
        registry=chain.client if registry else None,
    )
    bound: BoundAddress = await nursery.start(service.serve)
    return RunningSigner(service, bound, audit, state_dir, sealer)


@pytest.fixture
async def k4_signer(nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path) -> RunningSigner:
    return await _start(nursery, pki, chain, tmp_path)


@dataclass
class NewDevice:
    """A new master device: K10 (software) and its passkey."""

    k10: SoftwareK10Signer
    passkey: SoftAuthenticator

    @classmethod
    def generate(cls) -> NewDevice:
        return cls(
            SoftwareK10Signer(ec.generate_private_key(ec.SECP256R1())),
            SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN),
        )

    @property
    def entry(self) -> ch.NewMaster:
        return ch.NewMaster(
            k10_point=self.k10.public_point,
            k11_credential_id_hash=hashlib.sha256(self.passkey.credential_id).digest(),
            k11_point=self.passkey.public_point,
            rp_id_hash=self.passkey.rp_id_hash,
            roles=7,
        )

    def device_json(self) -> dict[str, object]:
        e = self.entry
        return {
            "k10_public_key": e.k10_point.hex(),
            "k11_credential_id_hash": e.k11_credential_id_hash.hex(),
            "k11_public_key": e.k11_point.hex(),
            "rp_id_hash": e.rp_id_hash.hex(),
            "roles": e.roles,
        }


async def _k4_wallet(client: httpx.AsyncClient, identity: str) -> str:
    response = await client.post("/k4/address", json={"identity_omni": identity})
    assert response.status_code == 200, response.text
    wallet: str = response.json()["wallet"]
    return wallet


async def _material(
    chain: Chain, wallet: str, device: NewDevice, **assertion: Any
) -> tuple[bytes, str, dict[str, object], bytes]:
    """(challenge, K10 r‖s hex, the assertion JSON, the raw DER K10 signature)."""
    challenge = await chain.client.challenge_for(
        ch.OP_REGISTER_FIRST_MASTER,
        "SidecarRegistry",
        actor_omni_for_wallet(wallet),
        ch.first_master_params(wallet, device.entry),
    )
    der = await device.k10.sign_digest(k10_digest(challenge))
    return (
        challenge,
        k10_raw_from_der(der).hex(),
        device.passkey.get(challenge, **assertion).to_json(),
        der,
    )


def _body(identity: str, device: NewDevice, k10: str, assertion: dict[str, object]) -> Any:
    return {
        "identity_omni": identity,
        "device": device.device_json(),
        "k10_signature": k10,
        "assertion": assertion,
    }


async def test_k4_approval_registers_an_email_operator_through_a_relay(
    k4_signer: RunningSigner, pki: Pki, chain: Chain
) -> None:
    identity = secrets.token_hex(32)
    device = NewDevice.generate()
    async with k4_signer.client(pki, "broker") as broker:
        wallet = await _k4_wallet(broker, identity)
        challenge, k10, assertion, der = await _material(chain, wallet, device)
        response = await broker.post(ROUTE, json=_body(identity, device, k10, assertion))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["wallet"] == wallet
        assert answer["operator_omni"] == actor_omni_for_wallet(wallet)
        assert answer["challenge"] == challenge.hex()

        # the same assertion approves nothing a second time
        again = await broker.post(ROUTE, json=_body(identity, device, k10, assertion))
        assert again.status_code == 409
        assert again.json()["error"] == "k11_assertion_replayed"

        # a relay (not the wallet) submits; the contract checks K4's EIP-712 signature
        relay = account_from_key(chain.anvil.accounts[3].private_key)
        mutation = SignedMutation(
            "SidecarRegistry", "register_first_master",
            (
                wallet, device.entry.abi_tuple(), encode_k10_sig(der),
                encode_k11_assertion(device.passkey.get(challenge)),
                bytes.fromhex(answer["signature"].removeprefix("0x")),
            ),
        )  # fmt: skip
        await chain.client.submit(mutation, relay)
        assert await chain.client.master_wallet(answer["operator_omni"]) == wallet

        # registered: K4 approves no further first master, even with fresh material
        other = NewDevice.generate()
        _, k10b, assertion_b, _ = await _material(chain, wallet, other)
        late = await broker.post(ROUTE, json=_body(identity, other, k10b, assertion_b))
        assert late.status_code == 409
        assert late.json()["error"] == "operator_already_registered"


async def test_k4_refuses_without_a_valid_assertion(
    k4_signer: RunningSigner, pki: Pki, chain: Chain
) -> None:
    identity = secrets.token_hex(32)
    device = NewDevice.generate()
    stranger = ec.generate_private_key(ec.SECP256R1())
    async with k4_signer.client(pki, "broker") as broker:
        wallet = await _k4_wallet(broker, identity)
        _, k10, good, _ = await _material(chain, wallet, device)
        cases: dict[str, dict[str, object]] = {
            "over another challenge": device.passkey.get(secrets.token_bytes(32)).to_json(),
            "another key": (await _material(chain, wallet, device, signing_key=stranger))[2],
            "no user verification": (await _material(chain, wallet, device, flags=0x01))[2],
            "another relying party": (await _material(chain, wallet, device, rp_id="evil.test"))[2],
            "a registration, not a get": (
                await _material(chain, wallet, device, kind="webauthn.create")
            )[2],
            "another credential": {**good, "rawId": "AAAA", "id": "AAAA"},
        }
        for what, assertion in cases.items():
            response = await broker.post(ROUTE, json=_body(identity, device, k10, assertion))
            assert response.status_code == 400, what
            assert response.json()["error"] == "k11_assertion_rejected", what
        missing = _body(identity, device, k10, good)
        del missing["assertion"]
        response = await broker.post(ROUTE, json=missing)
        assert response.status_code == 400
        assert response.json()["error"] == "missing_field"
        # a K10 signature over something else
        wrong_k10 = k10_raw_from_der(await device.k10.sign_digest(k10_digest(bytes(32)))).hex()
        response = await broker.post(ROUTE, json=_body(identity, device, wrong_k10, good))
        assert response.status_code == 400
        assert response.json()["error"] == "k10_signature_rejected"
        # malformed device fields
        for field, value in (("rp_id_hash", "00"), ("k11_public_key", "11" * 64), ("roles", 8)):
            bad = _body(identity, device, k10, good)
            bad["device"] = {**bad["device"], field: value}
            response = await broker.post(ROUTE, json=bad)
            assert response.status_code == 400, field
            assert response.json()["error"] == "first_master_request_invalid", field
        # the valid material still works afterwards: nothing above consumed it
        response = await broker.post(ROUTE, json=_body(identity, device, k10, good))
        assert response.status_code == 200, response.text
    refused = [e for e in k4_signer.audit.events if e.route == "k4_register_first_master"
               and e.status == 400]  # fmt: skip
    assert len(refused) == len(cases) + 5
    checked = [e for e in refused if e.error != "missing_field"]
    assert len(checked) == len(cases) + 4
    assert all(e.fields.get("identity") == identity for e in checked)


async def test_k4_refuses_material_for_another_identity(
    k4_signer: RunningSigner, pki: Pki, chain: Chain
) -> None:
    """Material signed for identity A's registration approves nothing for identity B."""
    a, b = secrets.token_hex(32), secrets.token_hex(32)
    device = NewDevice.generate()
    async with k4_signer.client(pki, "broker") as broker:
        wallet_a = await _k4_wallet(broker, a)
        _, k10, assertion, _ = await _material(chain, wallet_a, device)
        response = await broker.post(ROUTE, json=_body(b, device, k10, assertion))
        assert response.status_code == 400
        assert response.json()["error"] == "k10_signature_rejected"


async def test_k4_signs_nothing_else(k4_signer: RunningSigner, pki: Pki, chain: Chain) -> None:
    identity = secrets.token_hex(32)
    device = NewDevice.generate()
    async with (
        k4_signer.client(pki, "broker") as broker,
        k4_signer.client(pki, "worker") as worker,
    ):
        wallet = await _k4_wallet(broker, identity)
        _, k10, assertion, _ = await _material(chain, wallet, device)
        body = _body(identity, device, k10, assertion)
        # the worker may not ask at all
        response = await worker.post(ROUTE, json=body)
        assert response.status_code == 403
        # no typed data, message or transaction can ride along
        for extra in (
            {"typed_data": {"primaryType": "SetGovernance"}},
            {"message": "0x00"},
            {"transaction": {"to": wallet, "data": "0x"}},
        ):
            response = await broker.post(ROUTE, json={**body, **extra})
            assert response.status_code == 400
            assert response.json()["error"] == "unknown_field"
        # and there is no general-purpose K4 signing route
        for path in ("/k4/sign", "/k4/sign-typed-data", "/k4/sign-transaction"):
            response = await broker.post(path, json=body)
            assert response.status_code == 404


async def test_k4_approval_needs_the_registry(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path
) -> None:
    running = await _start(nursery, pki, chain, tmp_path, registry=False)
    identity = secrets.token_hex(32)
    device = NewDevice.generate()
    async with running.client(pki, "broker") as broker:
        wallet = await _k4_wallet(broker, identity)
        _, k10, assertion, _ = await _material(chain, wallet, device)
        response = await broker.post(ROUTE, json=_body(identity, device, k10, assertion))
        assert response.status_code == 503
        assert response.json()["error"] == "registry_unavailable"
