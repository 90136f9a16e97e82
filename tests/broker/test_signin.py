"""Sign-in in the order of the bootstrap stages: email link → passkey bound to K10 → SIWE → J1.

Real SMTP sink, real py_webauthn verification of softauthn's real WebAuthn responses, real
EIP-191 signatures by eth_account, the broker on a real socket.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agentkeys.b64url import b64url_encode
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.devstack.softauthn import FLAG_UP, SoftAuthenticator
from agentkeys.omni import IdentityType, actor_omni_for_wallet, identity_omni
from attest.k10_signature import k10_sign
from tests.broker._flow import (
    b64d,
    bearer,
    email_stage,
    enroll,
    full_sign_in,
    post_siwe,
    register_options,
    request_link,
    siwe_attempt,
    siwe_start,
)
from tests.broker.conftest import ORIGIN, RP_ID, Device, RunningBroker

EMAIL = "Operator@Example.org"


def _wallet() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


def _passkey(**kwargs: Any) -> SoftAuthenticator:
    return SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, **kwargs)


def _error(response: Any) -> str:
    return str(response.json()["error"])


async def test_full_sign_in_gives_j1_for_the_wallets_actor_omni(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    wallet = _wallet()
    answer = await full_sign_in(
        broker, smtp, email=EMAIL, wallet=wallet, device=Device.generate(), passkey=_passkey()
    )
    expected = actor_omni_for_wallet(wallet.address)
    assert answer["actor_omni"] == expected
    assert answer["wallet"] == wallet.address.lower()
    info = await broker.http.get("/v1/auth/session", headers=bearer(answer["session"]))
    assert info.status_code == 200
    assert info.json()["subject"] == expected
    assert info.json()["stage"] == "j1"
    assert info.json()["identity_omni"] == identity_omni(IdentityType.EMAIL, EMAIL)
    mail = smtp.messages(EMAIL.lower())[0]
    assert "expires in 10 minutes" in mail.body


async def test_email_link_is_single_use(broker: RunningBroker, smtp: SmtpSink) -> None:
    handle, link = await request_link(broker, smtp, EMAIL)
    assert (await broker.http.get(link)).status_code == 200
    again = await broker.http.get(link)
    assert again.status_code == 401
    assert _error(again) == "email_token_invalid"
    # the J0 is collected once
    first = await broker.http.post("/v1/auth/email/poll", json={"request": handle})
    assert first.status_code == 200
    second = await broker.http.post("/v1/auth/email/poll", json={"request": handle})
    assert second.status_code == 404
    assert _error(second) == "email_request_unknown"


async def test_expired_email_link_is_refused_and_gives_no_session(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    handle, link = await request_link(broker, smtp, EMAIL)
    broker.clock.offset = 601
    response = await broker.http.get(link)
    assert response.status_code == 401
    assert _error(response) == "email_token_expired"
    broker.clock.offset = 0  # even back inside the window, the used, unverified link is dead
    polled = await broker.http.post("/v1/auth/email/poll", json={"request": handle})
    assert polled.status_code == 202
    assert (await broker.http.get(link)).status_code == 401


async def test_unknown_email_token_is_refused(broker: RunningBroker) -> None:
    response = await broker.http.get("/v1/auth/email/verify", params={"token": "x" * 43})
    assert response.status_code == 401
    assert _error(response) == "email_token_invalid"


async def test_stage_two_needs_a_session(broker: RunningBroker) -> None:
    response = await broker.http.post(
        "/v1/auth/passkey/register/options", json={"k10_public_key": Device.generate().point.hex()}
    )
    assert response.status_code == 401
    assert _error(response) == "session_missing"


@pytest.mark.parametrize("fault", ["origin", "challenge", "k10"])
async def test_enrollment_faults_are_refused(
    broker: RunningBroker, smtp: SmtpSink, fault: str
) -> None:
    j0 = await email_stage(broker, smtp, EMAIL)
    device = Device.generate()
    options = await register_options(broker, j0, device)
    challenge = b64d(options["options"]["challenge"])
    passkey = _passkey()
    signing_key = device.key
    if fault == "origin":
        passkey = SoftAuthenticator(rp_id=RP_ID, origin="https://evil.example")
    registration = passkey.create(b"\x00" * 32 if fault == "challenge" else challenge)
    if fault == "k10":
        signing_key = Device.generate().key
    response = await broker.http.post(
        "/v1/auth/passkey/register/verify",
        json={
            "challenge_id": options["challenge_id"],
            "credential": registration.to_json(),
            "k10_signature": b64url_encode(k10_sign(signing_key, challenge)),
        },
        headers=bearer(j0),
    )
    assert response.status_code == 401
    expected = "k10_proof_rejected" if fault == "k10" else "passkey_registration_rejected"
    assert _error(response) == expected
    assert broker.denials(expected)


async def test_enrollment_challenge_commits_to_the_k10_key(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    # The K10 proof must be by the key the challenge was issued for.
    j0 = await email_stage(broker, smtp, EMAIL)
    device, other = Device.generate(), Device.generate()
    options = await register_options(broker, j0, device)
    challenge = b64d(options["options"]["challenge"])
    response = await broker.http.post(
        "/v1/auth/passkey/register/verify",
        json={
            "challenge_id": options["challenge_id"],
            "credential": _passkey().create(challenge).to_json(),
            "k10_signature": b64url_encode(k10_sign(other.key, challenge)),
        },
        headers=bearer(j0),
    )
    assert _error(response) == "k10_proof_rejected"
    # and the challenge is single use
    retry = await broker.http.post(
        "/v1/auth/passkey/register/verify",
        json={
            "challenge_id": options["challenge_id"],
            "credential": _passkey().create(challenge).to_json(),
            "k10_signature": b64url_encode(k10_sign(device.key, challenge)),
        },
        headers=bearer(j0),
    )
    assert _error(retry) == "challenge_unknown"


async def _enrolled(broker: RunningBroker, smtp: SmtpSink) -> tuple[str, SoftAuthenticator]:
    j0 = await email_stage(broker, smtp, EMAIL)
    passkey = _passkey()
    await enroll(broker, j0, Device.generate(), passkey)
    return j0, passkey


def _ago(seconds: int) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"domain": "evil.example"}, "siwe_domain_mismatch", id="wrong-domain"),
        pytest.param({"nonce": "abcdefgh12345678"}, "siwe_nonce_mismatch", id="wrong-nonce"),
        pytest.param({"chain_id": 1}, "siwe_chain_mismatch", id="wrong-chain-id"),
        pytest.param(
            {"issued_at": _ago(120), "expiration_time": _ago(60)}, "siwe_expired", id="expired"
        ),
        pytest.param({"uri": "https://evil.example/"}, "siwe_uri_mismatch", id="wrong-uri"),
    ],
)
async def test_siwe_faults_are_refused(
    broker: RunningBroker, smtp: SmtpSink, overrides: dict[str, Any], error: str
) -> None:
    j0, passkey = await _enrolled(broker, smtp)
    start = await siwe_start(broker, j0)
    response = await post_siwe(broker, j0, siwe_attempt(start, _wallet(), passkey, **overrides))
    assert response.status_code == 401
    assert _error(response) == error
    assert broker.denials(error)


async def test_siwe_signature_by_another_wallet_is_refused(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    j0, passkey = await _enrolled(broker, smtp)
    start = await siwe_start(broker, j0)
    attempt = siwe_attempt(start, _wallet(), passkey, address=_wallet().address)
    response = await post_siwe(broker, j0, attempt)
    assert _error(response) == "siwe_address_mismatch"


async def test_siwe_nonce_is_single_use(broker: RunningBroker, smtp: SmtpSink) -> None:
    j0, passkey = await _enrolled(broker, smtp)
    start = await siwe_start(broker, j0)
    attempt = siwe_attempt(start, _wallet(), passkey, domain="evil.example")
    assert (await post_siwe(broker, j0, attempt)).status_code == 401
    good = siwe_attempt(start, _wallet(), passkey)
    response = await post_siwe(broker, j0, good)
    assert _error(response) == "challenge_unknown"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param(
            {"origin": "https://evil.example"}, "passkey_assertion_rejected", id="wrong-origin"
        ),
        pytest.param({"flags": FLAG_UP}, "passkey_assertion_rejected", id="no-user-verification"),
        pytest.param({"rp_id": "evil.example"}, "passkey_assertion_rejected", id="wrong-rp-id"),
    ],
)
async def test_webauthn_assertion_faults_are_refused(
    broker: RunningBroker, smtp: SmtpSink, options: dict[str, Any], error: str
) -> None:
    j0, passkey = await _enrolled(broker, smtp)
    start = await siwe_start(broker, j0)
    response = await post_siwe(
        broker, j0, siwe_attempt(start, _wallet(), passkey, assertion_options=options)
    )
    assert response.status_code == 401
    assert _error(response) == error


async def test_webauthn_assertion_over_the_wrong_challenge_is_refused(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    j0, passkey = await _enrolled(broker, smtp)
    start = await siwe_start(broker, j0)
    wrong = dict(start)
    wrong["webauthn"] = {"challenge": b64url_encode(b"\x01" * 32)}
    attempt = siwe_attempt(wrong, _wallet(), passkey)
    response = await post_siwe(broker, j0, attempt)
    assert _error(response) == "passkey_assertion_rejected"


async def test_replayed_sign_count_is_refused(broker: RunningBroker, smtp: SmtpSink) -> None:
    wallet = _wallet()
    passkey = _passkey()
    await full_sign_in(
        broker, smtp, email=EMAIL, wallet=wallet, device=Device.generate(), passkey=passkey
    )
    assert passkey.sign_count == 1
    j0 = await email_stage(broker, smtp, EMAIL)  # a second sign-in, same identity and passkey
    start = await siwe_start(broker, j0)
    replay = siwe_attempt(start, wallet, passkey, assertion_options={"sign_count": 1})
    response = await post_siwe(broker, j0, replay)
    assert response.status_code == 401
    assert _error(response) == "passkey_sign_count_replayed"
    start = await siwe_start(broker, j0)
    fresh = siwe_attempt(start, wallet, passkey)
    assert (await post_siwe(broker, j0, fresh)).status_code == 200


async def test_another_identitys_passkey_is_not_accepted(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    _, theirs = await _enrolled(broker, smtp)
    j0 = await email_stage(broker, smtp, "someone@example.org")
    await enroll(broker, j0, Device.generate(), _passkey())
    start = await siwe_start(broker, j0)
    response = await post_siwe(broker, j0, siwe_attempt(start, _wallet(), theirs))
    assert _error(response) == "passkey_not_enrolled"


async def test_siwe_needs_an_enrolled_passkey(broker: RunningBroker, smtp: SmtpSink) -> None:
    j0 = await email_stage(broker, smtp, EMAIL)
    response = await broker.http.post("/v1/auth/siwe/start", json={}, headers=bearer(j0))
    assert response.status_code == 403
    assert _error(response) == "passkey_not_enrolled"


async def test_j0_is_spent_by_j1_and_sessions_revoke(broker: RunningBroker, smtp: SmtpSink) -> None:
    j0 = await email_stage(broker, smtp, EMAIL)
    passkey = _passkey()
    await enroll(broker, j0, Device.generate(), passkey)
    start = await siwe_start(broker, j0)
    answer = (await post_siwe(broker, j0, siwe_attempt(start, _wallet(), passkey))).json()
    spent = await broker.http.get("/v1/auth/session", headers=bearer(j0))
    assert _error(spent) == "session_revoked"
    j1 = answer["session"]
    wrong_stage = await broker.http.post("/v1/auth/siwe/start", json={}, headers=bearer(j1))
    assert wrong_stage.status_code == 403
    assert _error(wrong_stage) == "session_stage_mismatch"
    revoke = await broker.http.post("/v1/auth/session/revoke", headers=bearer(j1))
    assert revoke.status_code == 200
    revoked = await broker.http.get("/v1/auth/session", headers=bearer(j1))
    assert _error(revoked) == "session_revoked"


async def test_tampered_and_expired_sessions_are_refused(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    j0 = await email_stage(broker, smtp, EMAIL)
    head, body, sig = j0.split(".")
    tampered = ".".join((head, body, sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA")))
    response = await broker.http.get("/v1/auth/session", headers=bearer(tampered))
    assert _error(response) == "session_invalid"
    broker.clock.offset = 10_000
    response = await broker.http.get("/v1/auth/session", headers=bearer(j0))
    assert _error(response) == "session_expired"


async def test_pending_links_per_address_are_bounded(broker: RunningBroker, smtp: SmtpSink) -> None:
    for _ in range(5):
        await request_link(broker, smtp, EMAIL)
    response = await broker.http.post("/v1/auth/email/start", json={"email": EMAIL.upper()})
    assert response.status_code == 429
    assert _error(response) == "email_rate_limited"
    assert len(smtp.messages(EMAIL.lower())) == 5
    broker.clock.offset = 601  # the old links expired: a new one may be sent
    await request_link(broker, smtp, EMAIL)


@pytest.mark.parametrize(
    "email",
    [
        "a,b@example.org",
        "Name <a@example.org>",
        "a@b@example.org",
        "a@",
        "@example.org",
        "a b@example.org",
        "a@example.org\nBcc: c@example.org",
    ],
)
async def test_only_plain_addresses_get_links(
    broker: RunningBroker, smtp: SmtpSink, email: str
) -> None:
    response = await broker.http.post("/v1/auth/email/start", json={"email": email})
    assert response.status_code == 400
    assert _error(response) == "invalid_identifier"
    assert smtp.messages() == []
