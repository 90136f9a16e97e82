"""Control of an email inbox alone must not yield a J1 for that email
operator's K4 wallet, nor an OIDC token (raw S3 on its vault).

The reviewer's attack, step by step, against the real broker + signer + anvil: intercept the
magic link (a J0) → enroll an own passkey → ``/v1/auth/siwe/k4`` → ``/v1/mint-oidc-jwt``.
Each step now fails; the legitimate flows around it (first enrollment, a second passkey
approved by the first, K4 SIWE with the chain-registered passkey, OIDC minting with a fresh
assertion by it) still work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from agentkeys.b64url import b64url_encode
from agentkeys.broker import _passkey as pk
from agentkeys.chain.signing import MasterAuthority
from agentkeys.cli._bootstrap import BrokerSignIn
from agentkeys.cli._errors import BrokerRefused
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet
from attest.device_key import SoftwareDeviceKey
from attest.k10_signature import k10_sign
from tests.broker._flow import b64d, bearer, email_stage, register_options, siwe_start
from tests.broker.conftest import ORIGIN, RP_ID, Chain, Device
from tests.broker.test_relay_first_master import (
    ROUTE,
    EmailOperator,
    Stack,
    _email_operator,
    _registration,
    _stack,
)

EMAIL = "victim@example.org"


def _passkey() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)


async def _enroll(
    stack: Stack, j0: str, device: Device, passkey: SoftAuthenticator,
    approver: SoftAuthenticator | None = None, *, approve_other: bool = False,
) -> Any:  # fmt: skip
    """Stage 2, with an approval by ``approver`` over the enrollment-approval challenge
    (``approve_other``: over a challenge naming another credential than the new one)."""
    options = await register_options(stack, j0, device)
    challenge = b64d(options["options"]["challenge"])
    credential = passkey.create(challenge).to_json()
    body: dict[str, Any] = {
        "challenge_id": options["challenge_id"],
        "credential": credential,
        "k10_signature": b64url_encode(k10_sign(device.key, challenge)),
    }
    if approver is not None:
        named = b"another credential" if approve_other else passkey.credential_id
        body["approval"] = approver.get(
            pk.enrollment_approval_challenge(challenge, named)
        ).to_json()
    return await stack.http.post("/v1/auth/passkey/register/verify", json=body, headers=bearer(j0))


async def _siwe_k4(stack: Stack, j0: str, passkey: SoftAuthenticator) -> Any:
    start = await siwe_start(stack, j0)
    assertion = passkey.get(b64d(start["webauthn"]["challenge"])).to_json()
    return await stack.http.post(
        "/v1/auth/siwe/k4",
        json={"challenge_id": start["challenge_id"], "assertion": assertion},
        headers=bearer(j0),
    )


async def _register_first_master(chain: Chain, stack: Stack, op: EmailOperator) -> None:
    body = await _registration(chain, op.wallet, op.device, op.passkey)
    response = await stack.http.post(ROUTE, json=body, headers=bearer(op.j1))
    assert response.status_code == 200, response.text


async def _mint(
    stack: Stack, j1: str, passkey: SoftAuthenticator | None = None, device: str | None = None
) -> Any:
    if passkey is None:
        return await stack.http.post("/v1/mint-oidc-jwt", headers=bearer(j1))
    start = await stack.http.post("/v1/mint-oidc-jwt/challenge", headers=bearer(j1))
    assert start.status_code == 200, start.text
    assert start.json()["required"] is True
    assertion = passkey.get(b64d(start.json()["webauthn"]["challenge"])).to_json()
    body = {
        "challenge_id": start.json()["challenge_id"], "device_key_hash": device,
        "assertion": assertion,
    }  # fmt: skip
    return await stack.http.post("/v1/mint-oidc-jwt", json=body, headers=bearer(j1))


async def test_mailbox_alone_cannot_enroll_a_passkey_for_an_enrolled_identity(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        victim = await _email_operator(stack, smtp, EMAIL)  # first enrollment: no approval
        attacker = _passkey()
        j0 = await email_stage(stack, smtp, EMAIL)  # the intercepted magic link
        options = await register_options(stack, j0, Device.generate())
        assert options["approval"]["allow_credentials"] == [
            b64url_encode(victim.passkey.credential_id)
        ]
        refused = await _enroll(stack, j0, Device.generate(), attacker)
        assert refused.status_code == 403
        assert refused.json()["error"] == "passkey_approval_required"
        # "approved" by the attacker's own (unenrolled) passkey
        refused = await _enroll(stack, j0, Device.generate(), attacker, attacker)
        assert refused.json()["error"] == "passkey_approval_required"
        # the victim's approval of another credential does not carry over to this one
        refused = await _enroll(
            stack, j0, Device.generate(), attacker, victim.passkey, approve_other=True
        )
        assert refused.status_code == 401
        assert refused.json()["error"] == "passkey_assertion_rejected"
        # so the J0 has no passkey to sign in with: no J1 for the victim's wallet
        response = await _siwe_k4(stack, j0, attacker)
        assert response.status_code == 403
        assert response.json()["error"] == "passkey_not_enrolled"


async def test_second_passkey_approved_by_the_first_signs_in_before_any_master(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        first = await _email_operator(stack, smtp, EMAIL)
        j0 = await email_stage(stack, smtp, EMAIL)
        second = _passkey()
        added = await _enroll(stack, j0, Device.generate(), second, first.passkey)
        assert added.status_code == 200, added.text
        response = await _siwe_k4(stack, j0, second)
        assert response.status_code == 200, response.text
        assert response.json()["wallet"] == first.wallet
        # no master on chain yet: the J1 alone mints (the v1 model; docs/broker.md)
        minted = await _mint(stack, response.json()["session"])
        assert minted.status_code == 200, minted.text


async def test_k4_sign_in_needs_the_chain_registered_master_passkey(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        victim = await _email_operator(stack, smtp, EMAIL)
        await _register_first_master(chain, stack, victim)
        # a passkey the broker knows for the identity, but not the one on chain
        j0 = await email_stage(stack, smtp, EMAIL)
        other = _passkey()
        added = await _enroll(stack, j0, Device.generate(), other, victim.passkey)
        assert added.status_code == 200, added.text
        refused = await _siwe_k4(stack, j0, other)
        assert refused.status_code == 403
        assert refused.json()["error"] == "passkey_not_chain_master"
        # the registered one works
        j0 = await email_stage(stack, smtp, EMAIL)
        response = await _siwe_k4(stack, j0, victim.passkey)
        assert response.status_code == 200, response.text
        assert response.json()["wallet"] == victim.wallet


async def test_revoked_master_passkey_no_longer_signs_in(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        victim = await _email_operator(stack, smtp, EMAIL)
        await _register_first_master(chain, stack, victim)
        authority = MasterAuthority(
            bytes.fromhex(victim.device.hash), victim.device.signer, victim.passkey
        )
        mutation = await chain.client.prepare_revoke_device(
            actor_omni_for_wallet(victim.wallet), victim.device.hash, authority
        )
        await chain.client.submit(mutation, chain.accounts[5])
        j0 = await email_stage(stack, smtp, EMAIL)
        refused = await _siwe_k4(stack, j0, victim.passkey)
        assert refused.json()["error"] == "passkey_not_chain_master"


async def test_oidc_token_needs_a_fresh_chain_master_assertion(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        victim = await _email_operator(stack, smtp, EMAIL)
        await _register_first_master(chain, stack, victim)
        j1 = victim.j1
        bare = await _mint(stack, j1)
        assert bare.status_code == 401
        assert bare.json()["error"] == "passkey_assertion_required"
        # a passkey that is not the device's registered one
        wrong = await _mint(stack, j1, _passkey(), victim.device.hash)
        assert wrong.status_code == 403
        assert wrong.json()["error"] == "passkey_not_chain_master"
        # the right passkey, named with a device that is not a master of this operator
        wrong = await _mint(stack, j1, victim.passkey, Device.generate().hash)
        assert wrong.json()["error"] == "passkey_not_chain_master"
        good = await _mint(stack, j1, victim.passkey, victim.device.hash)
        assert good.status_code == 200, good.text
        assert good.json()["token"]
        # the challenge is single-use
        start = await stack.http.post("/v1/mint-oidc-jwt/challenge", headers=bearer(j1))
        assertion = victim.passkey.get(b64d(start.json()["webauthn"]["challenge"])).to_json()
        body = {
            "challenge_id": start.json()["challenge_id"],
            "device_key_hash": victim.device.hash, "assertion": assertion,
        }  # fmt: skip
        first = await stack.http.post("/v1/mint-oidc-jwt", json=body, headers=bearer(j1))
        assert first.status_code == 200, first.text
        again = await stack.http.post("/v1/mint-oidc-jwt", json=body, headers=bearer(j1))
        assert again.json()["error"] == "challenge_unknown"


async def test_cli_enrolls_a_second_passkey_with_the_first_ones_approval(
    nursery: trio.Nursery, tmp_path: Path, chain: Chain, smtp: SmtpSink
) -> None:
    """agentkeys.cli._bootstrap.BrokerSignIn.enroll(approve=...) computes the approval."""
    async with _stack(nursery, tmp_path, chain, smtp) as stack:
        first = await _email_operator(stack, smtp, EMAIL)
        signin = BrokerSignIn(stack.http)
        second = _passkey()

        async def create(options: Any) -> Any:
            return second.create(b64d(options["challenge"])).to_json()

        async def approve(challenge: bytes, allow: list[bytes]) -> Any:
            assert allow == [first.passkey.credential_id]
            return first.passkey.get(challenge).to_json()

        key = SoftwareDeviceKey.open(tmp_path / "k10.pem")
        j0 = await email_stage(stack, smtp, EMAIL)
        with pytest.raises(BrokerRefused, match="passkey_approval_required"):
            await signin.enroll(j0, key, create)
        answer = await signin.enroll(j0, key, create, approve)
        assert answer["credential_id"] == b64url_encode(second.credential_id)
