"""The signer over real mutual TLS with a real anvil chain and a real (software) sealer.

Issue 5 acceptance: role refusals, KEK vectors, epoch rules and rotation on
chain, K3 surviving a restart, K4 wallets and SIWE, K10/K11 verification.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import stat
import time
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec
from eth_utils.address import to_checksum_address

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import p256_point_bytes
from agentkeys.signer import KeyStore
from agentkeys.signer.errors import KeyStoreError
from agentkeys.wallet import recover_eip191
from attest.k10_signature import P256_N, k10_sign
from attest.seal import SoftwareSealer
from tests.service.conftest import Pki, self_signed_certificate
from tests.signer.conftest import Chain, RunningSigner, kek_vectors, seed_state, start_signer

V1 = kek_vectors()["v1_chain"][0]
V2 = kek_vectors()["v2"]


def _v2(actor: str, epoch: int, purpose: str = "decrypt") -> dict[str, object]:
    return {"version": 2, "actor_omni": actor, "epoch": epoch, "purpose": purpose}


async def _kek(client: httpx.AsyncClient, body: dict[str, object]) -> httpx.Response:
    return await client.post("/derive-cred-kek", json=body)


# -- who may call -------------------------------------------------------------


async def test_broker_gets_no_kek_and_worker_gets_no_k4(signer: RunningSigner, pki: Pki) -> None:
    async with signer.client(pki, "broker") as broker, signer.client(pki, "worker") as worker:
        r = await _kek(broker, _v2(V2[0]["actor_omni"], 1))
        assert r.status_code == 403
        assert r.json()["error"] == "forbidden"
        r = await worker.post("/k4/address", json={"identity_omni": V1["identity_omni"]})
        assert r.status_code == 403
        r = await worker.post(
            "/k4/siwe-sign", json={"identity_omni": V1["identity_omni"], "message": "x"}
        )
        assert r.status_code == 403
        assert (await broker.get("/oidc/jwks")).status_code == 200
    denied = [e for e in signer.audit.events if e.outcome == "denied"]
    assert [(e.peer_role, e.route) for e in denied] == [
        ("broker", "derive_cred_kek"),
        ("worker", "k4_address"),
        ("worker", "k4_siwe_sign"),
    ]


@pytest.mark.parametrize("client_cert", ["none", "self-signed", "signer"])
async def test_connection_without_a_client_role_certificate_is_refused(
    signer: RunningSigner, pki: Pki, tmp_path: Path, client_cert: str
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca))
    if client_cert == "self-signed":
        cert, key = self_signed_certificate(tmp_path, "worker")
        ctx.load_cert_chain(str(cert), str(key))
    elif client_cert == "signer":  # a deployment certificate, but not a client role
        ctx.load_cert_chain(str(pki.cert("signer")), str(pki.key("signer")))
    async with httpx.AsyncClient(verify=ctx, trust_env=False) as client:
        with pytest.raises(httpx.TransportError):
            await client.post(signer.bound.url + "/derive-cred-kek", json=_v2("ab" * 32, 1))
    assert not [e for e in signer.audit.events if e.kind == "request"]


# -- KEKs -----------------------------------------------------------------------


@pytest.mark.parametrize("vector", V2, ids=lambda v: v["actor_omni"][:8])
async def test_v2_kek_equals_the_vector(
    signer: RunningSigner, pki: Pki, vector: dict[str, str]
) -> None:
    async with signer.client(pki, "worker") as worker:
        for purpose in ("encrypt", "decrypt"):
            r = await _kek(worker, _v2("0x" + vector["actor_omni"].upper(), 1, purpose))
            assert r.status_code == 200, r.text
            assert b64url_decode(r.json()["kek"]).hex() == vector["kek_hex"]
    row = signer.audit.events[-1]
    assert row.fields["actor"] == vector["actor_omni"]
    assert row.fields["epoch"] == 1
    assert vector["kek_hex"] not in repr(signer.audit.events)


async def test_v1_kek_equals_the_vector(signer: RunningSigner, pki: Pki) -> None:
    body = {
        "version": 1,
        "purpose": "decrypt",
        "identity_omni": V1["identity_omni"],
        "wallet": V1["wallet"],
        "service": V1["service"],
    }
    async with signer.client(pki, "worker") as worker:
        r = await _kek(worker, body)
        assert r.status_code == 200, r.text
        assert b64url_decode(r.json()["kek"]).hex() == V1["kek_hex"]
        other_wallet = {**body, "wallet": "0x" + "11" * 20}
        r = await _kek(worker, other_wallet)
        assert r.status_code == 403
        assert r.json()["error"] == "wallet_mismatch"
        mixed = {**body, "epoch": 1}
        r = await _kek(worker, mixed)
        assert r.status_code == 400
        assert r.json()["error"] == "kek_request_invalid"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_v2("*", 1), "invalid_identifier"),
        (_v2("ab" * 31, 1), "invalid_identifier"),
        ({"version": 3, "purpose": "decrypt"}, "wrong_type"),
        ({"version": 2, "purpose": "sign", "actor_omni": "ab" * 32, "epoch": 1}, "wrong_type"),
        ({"version": 2, "purpose": "decrypt", "actor_omni": "ab" * 32}, "kek_request_invalid"),
        ({**_v2("ab" * 32, 1), "service": "openai"}, "kek_request_invalid"),
    ],
)
async def test_malformed_kek_requests_are_refused(
    signer: RunningSigner, pki: Pki, body: dict[str, object], error: str
) -> None:
    async with signer.client(pki, "worker") as worker:
        r = await _kek(worker, body)
    assert r.status_code == 400
    assert r.json()["error"] == error


async def test_future_epoch_is_refused(signer: RunningSigner, pki: Pki) -> None:
    async with signer.client(pki, "worker") as worker:
        for purpose in ("encrypt", "decrypt"):
            r = await _kek(worker, _v2(V2[0]["actor_omni"], 2, purpose))
            assert r.status_code == 409
            assert r.json()["error"] == "epoch_in_future"


async def test_epoch_rotation_on_chain(signer: RunningSigner, pki: Pki, chain: Chain) -> None:
    actor = V2[0]["actor_omni"]
    assert signer.service.current_epoch == 1
    new_epoch = await chain.advance_epoch()
    assert new_epoch == 2
    async with signer.client(pki, "worker") as worker:
        r = await _kek(worker, _v2(actor, 2, "encrypt"))
        assert r.status_code == 200, r.text
        new_kek = r.json()["kek"]
        assert b64url_decode(new_kek).hex() != V2[0]["kek_hex"]
        # old epoch: decryption still works, with the old key; encryption does not
        r = await _kek(worker, _v2(actor, 1, "decrypt"))
        assert b64url_decode(r.json()["kek"]).hex() == V2[0]["kek_hex"]
        r = await _kek(worker, _v2(actor, 1, "encrypt"))
        assert r.status_code == 409
        assert r.json()["error"] == "epoch_not_current"
        status = (await worker.get("/status")).json()
    assert status == {"current_epoch": 2, "epochs": [1, 2]}
    sealed = signer.state_dir / "k3-2.sealed"
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert len(sealed.read_bytes()) > 32  # a sealed blob, not the raw secret

    # the new K3 survives a restart of the signer (same sealed state, same sealer)
    again = await KeyStore.open(signer.state_dir, signer.sealer)
    assert again.epochs() == (1, 2)
    from agentkeys.kek import v2_kek

    k3 = again.k3(2)
    assert k3 is not None
    assert b64url_encode(v2_kek(k3, actor)) == new_kek


async def test_sealed_state_does_not_open_with_another_sealer(
    signer: RunningSigner, tmp_path: Path
) -> None:
    other = SoftwareSealer.open(tmp_path / "other-seal" / "seal.key")
    with pytest.raises(KeyStoreError):
        await KeyStore.open(signer.state_dir, other)


async def test_restarted_signer_serves_the_same_keys(
    nursery: trio.Nursery, pki: Pki, chain: Chain, signer: RunningSigner
) -> None:
    signer.service.shutdown()
    with trio.fail_after(10):
        while True:  # wait for the old listener to go away
            try:
                await trio.open_tcp_stream("127.0.0.1", signer.bound.port)
            except OSError:
                break
            await trio.sleep(0.05)
    restarted = await start_signer(
        nursery, pki=pki, chain=chain, state_dir=signer.state_dir, sealer=signer.sealer
    )
    async with restarted.client(pki, "worker") as worker:
        r = await _kek(worker, _v2(V2[1]["actor_omni"], 1))
    assert b64url_decode(r.json()["kek"]).hex() == V2[1]["kek_hex"]


# -- K4 ---------------------------------------------------------------------------


def _siwe(wallet: str, nonce: str = "n0nce1234", *, lifetime: int = 300) -> str:
    now = int(time.time())
    return "\n".join(
        [
            "app.example wants you to sign in with your Ethereum account:",
            to_checksum_address(wallet),
            "",
            "Sign in to agentkeys.",
            "",
            "URI: https://app.example/login",
            "Version: 1",
            "Chain ID: 1",
            f"Nonce: {nonce}",
            f"Issued At: {_rfc3339(now)}",
            f"Expiration Time: {_rfc3339(now + lifetime)}",
        ]
    )


def _rfc3339(moment: int) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_k4_address_and_siwe_signature(signer: RunningSigner, pki: Pki) -> None:
    identity = V1["identity_omni"]
    async with signer.client(pki, "broker") as broker:
        r = await broker.post("/k4/address", json={"identity_omni": identity})
        assert r.json() == {"identity_omni": identity, "wallet": V1["wallet"]}
        message = _siwe(V1["wallet"])
        r = await broker.post("/k4/siwe-sign", json={"identity_omni": identity, "message": message})
        assert r.status_code == 200, r.text
        sig = bytes.fromhex(r.json()["signature"].removeprefix("0x"))
        assert sig[64] in (27, 28)
        assert recover_eip191(message.encode(), sig) == V1["wallet"]

        # never a v1 KEK message, never a message for another wallet
        kek_message = f"agentkeys.kek.v1:{V1['wallet']}:{V1['service']}"
        for bad in (
            kek_message,
            _siwe("0x" + "22" * 20),
            _siwe(V1["wallet"]) + "\nNonce: 2",
            _siwe(V1["wallet"]).replace("app.example wants", "evil.example wants"),
            _siwe(V1["wallet"]).replace("Chain ID: 1", "Chain ID: 5"),
            _siwe(V1["wallet"], lifetime=86400),
        ):
            r = await broker.post("/k4/siwe-sign", json={"identity_omni": identity, "message": bad})
            assert r.status_code == 400
            assert r.json()["error"] == "siwe_message_rejected"


# -- K10 / K11 --------------------------------------------------------------------


async def test_k10_signature_verification(signer: RunningSigner, pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    point = p256_point_bytes(key.public_key())
    message = b"agentkeys k10 test message"
    rs = k10_sign(key, message)  # low-S, as the chain requires
    body = {"public_key": point.hex(), "signature": rs.hex(), "message": b64url_encode(message)}
    async with signer.client(pki, "worker") as worker:
        r = await worker.post("/verify/k10-sig", json=body)
        assert r.status_code == 200, r.text
        from eth_hash.auto import keccak

        assert r.json() == {"verified": True, "device_key_hash": keccak(point).hex()}
        digest = {**body, "message": None, "digest": hashlib.sha256(message).hexdigest()}
        assert (await worker.post("/verify/k10-sig", json=digest)).status_code == 200
        tampered = {**body, "message": b64url_encode(message + b"!")}
        r = await worker.post("/verify/k10-sig", json=tampered)
        assert r.status_code == 400
        assert r.json()["error"] == "k10_signature_rejected"
        # the malleable twin (r, n - s) verifies under plain ECDSA; the chain refuses it
        r_, s_ = int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big")
        high = r_.to_bytes(32, "big") + (P256_N - s_).to_bytes(32, "big")
        r = await worker.post("/verify/k10-sig", json={**body, "signature": high.hex()})
        assert (r.status_code, r.json()["error"]) == (400, "k10_signature_rejected")
        both = {**body, "digest": "00" * 32}
        assert (await worker.post("/verify/k10-sig", json=both)).status_code == 400


async def test_k11_assertion_verification(signer: RunningSigner, pki: Pki) -> None:
    authenticator = SoftAuthenticator(rp_id="agentkeys.example", origin="https://agentkeys.example")
    challenge = os.urandom(32)
    assertion = authenticator.get(challenge)
    body = {
        "credential": assertion.to_json(),
        "expected_challenge": b64url_encode(challenge),
        "expected_rp_id": "agentkeys.example",
        "expected_origin": "https://agentkeys.example",
        "credential_public_key": b64url_encode(authenticator.cose_key()),
        "current_sign_count": 0,
    }
    async with signer.client(pki, "broker") as broker:
        r = await broker.post("/verify/k11-assertion", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["verified"] is True
        assert r.json()["user_verified"] is True
        wrong = {**body, "expected_challenge": b64url_encode(os.urandom(32))}
        r = await broker.post("/verify/k11-assertion", json=wrong)
        assert r.status_code == 400
        assert r.json()["error"] == "k11_assertion_rejected"
        replay = {**body, "current_sign_count": 99}
        r = await broker.post("/verify/k11-assertion", json=replay)
        assert r.status_code == 400


async def test_watcher_takes_up_a_new_epoch_without_requests(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, sealer: SoftwareSealer
) -> None:
    state_dir = tmp_path / "watched-state"
    await seed_state(state_dir, sealer)
    running = await start_signer(
        nursery, pki=pki, chain=chain, state_dir=state_dir, sealer=sealer, epoch_poll_interval=0.05
    )
    assert running.service.current_epoch == 1
    await chain.advance_epoch()
    with trio.fail_after(20):  # a bound on a hang, not a timing assertion
        await running.service.wait_for_epoch(2)
    assert (state_dir / "k3-2.sealed").exists()
    refused = [e for e in running.audit.events if e.outcome != "ok"]
    assert refused == []
