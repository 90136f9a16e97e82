"""The operator's side of the sign-in stages, step by step (as the CLI / a browser does them)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import trio
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from agentkeys.b64url import b64url_encode
from agentkeys.broker import J1
from agentkeys.device_signin import device_signin_message
from agentkeys.devstack.smtp_sink import SmtpSink, find_link
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.siwe import SiweMessage
from attest.k10_signature import k10_sign
from tests.broker.conftest import Device, Operator, RunningBroker


class HasHttp(Protocol):
    """Anything with an ``http`` client on the broker (a RunningBroker, or a bare client)."""

    http: httpx.AsyncClient


@dataclass
class BrokerClient:
    """A bare HTTP client on a broker started elsewhere (e.g. by run_broker)."""

    http: httpx.AsyncClient


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def j1_for(broker: RunningBroker, operator: Operator) -> str:
    """A J1 for ``operator`` issued by the broker's own session issuer (skips stages 1-3)."""
    token, _session = await broker.service.sessions.issue(
        stage=J1,
        subject=operator.omni,
        now=int(time.time()),
        lifetime=600,
        extra={"wallet": operator.wallet.address.lower()},
    )
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the sidecar's device sign-in (SPEC section 8) ---------------------------------------


async def challenge_for(broker: RunningBroker, device: Device) -> Any:
    """``POST /v1/auth/device/challenge`` for ``device`` (the response)."""
    return await broker.http.post(
        "/v1/auth/device/challenge", json={"device_key_hash": device.hash}
    )


def signature(
    device: Device,
    challenge: str,
    *,
    key_of: Device | None = None,
    audience: str = "agentkeys-broker",
) -> str:
    """The K10 sign-in signature for ``device`` over ``challenge`` (by ``key_of``'s key)."""
    message = device_signin_message(
        audience=audience, challenge=bytes.fromhex(challenge), device_key_hash=device.hash
    )
    return b64url_encode(k10_sign((key_of or device).key, message))


async def present(
    broker: RunningBroker, device: Device, challenge: str, signed: str | None = None
) -> Any:
    """``POST /v1/auth/device/session`` for ``device`` with ``challenge`` and ``signed``
    (default: the device's own signature over it)."""
    return await broker.http.post(
        "/v1/auth/device/session",
        json={
            "device_key_hash": device.hash,
            "challenge": challenge,
            "signature": signed if signed is not None else signature(device, challenge),
        },
    )


async def sign_in(broker: RunningBroker, device: Device, *, key_of: Device | None = None) -> Any:
    """A whole device sign-in, as the daemon does it (the session route's response)."""
    answer = await challenge_for(broker, device)
    assert answer.status_code == 200, answer.text
    challenge = answer.json()["challenge"]
    assert answer.json()["audience"] == "agentkeys-broker"
    return await present(broker, device, challenge, signature(device, challenge, key_of=key_of))


async def request_link(broker: HasHttp, smtp: SmtpSink, email: str) -> tuple[str, str]:
    """Stage 1a: ask for a link; returns (request handle, link URL from the email)."""
    before = len(smtp.messages(email))
    response = await broker.http.post("/v1/auth/email/start", json={"email": email})
    assert response.status_code == 200, response.text
    with trio.fail_after(30):
        mail = await smtp.wait_for(email, count=before + 1)
    link = find_link(mail, "/v1/auth/email/verify")
    assert link is not None
    return response.json()["request"], link


async def email_stage(broker: HasHttp, smtp: SmtpSink, email: str) -> str:
    """Stage 1: link → follow → poll; returns the J0 session."""
    handle, link = await request_link(broker, smtp, email)
    pending = await broker.http.post("/v1/auth/email/poll", json={"request": handle})
    assert pending.status_code == 202
    followed = await broker.http.get(link)
    assert followed.status_code == 200, followed.text
    polled = await broker.http.post("/v1/auth/email/poll", json={"request": handle})
    assert polled.status_code == 200, polled.text
    token: str = polled.json()["session"]
    return token


async def register_options(broker: HasHttp, j0: str, device: Device) -> dict[str, Any]:
    response = await broker.http.post(
        "/v1/auth/passkey/register/options",
        json={"k10_public_key": device.point.hex()},
        headers=bearer(j0),
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def enroll(
    broker: HasHttp, j0: str, device: Device, passkey: SoftAuthenticator
) -> dict[str, Any]:
    """Stage 2: registration options → softauthn create → verify (with the K10 proof)."""
    options = await register_options(broker, j0, device)
    challenge = b64d(options["options"]["challenge"])
    response = await broker.http.post(
        "/v1/auth/passkey/register/verify",
        json={
            "challenge_id": options["challenge_id"],
            "credential": passkey.create(challenge).to_json(),
            "k10_signature": b64url_encode(k10_sign(device.key, challenge)),
        },
        headers=bearer(j0),
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def siwe_start(broker: HasHttp, j0: str) -> dict[str, Any]:
    response = await broker.http.post("/v1/auth/siwe/start", json={}, headers=bearer(j0))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@dataclass(frozen=True)
class SiweAttempt:
    message: str
    signature: str
    assertion: dict[str, object]
    challenge_id: str


def siwe_attempt(
    start: dict[str, Any],
    wallet: LocalAccount,
    passkey: SoftAuthenticator,
    *,
    assertion_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> SiweAttempt:
    """The operator's wallet signs the SIWE message; the passkey asserts over the challenge."""
    fields: dict[str, Any] = {
        "domain": start["domain"],
        "address": wallet.address,
        "statement": "Sign in to agentkeys.",
        "uri": start["uri"],
        "chain_id": start["chain_id"],
        "nonce": start["nonce"],
        "issued_at": start["issued_at"],
        "expiration_time": start["expiration_time"],
    }
    fields.update(overrides)
    text = SiweMessage(**fields).to_text()
    signed = Account.sign_message(encode_defunct(text=text), private_key=wallet.key)
    challenge = b64d(start["webauthn"]["challenge"])
    assertion = passkey.get(challenge, **(assertion_options or {})).to_json()
    return SiweAttempt(text, "0x" + bytes(signed.signature).hex(), assertion, start["challenge_id"])


async def post_siwe(broker: HasHttp, j0: str, attempt: SiweAttempt) -> Any:
    return await broker.http.post(
        "/v1/auth/siwe/verify",
        json={
            "challenge_id": attempt.challenge_id,
            "message": attempt.message,
            "signature": attempt.signature,
            "assertion": attempt.assertion,
        },
        headers=bearer(j0),
    )


async def full_sign_in(
    broker: HasHttp,
    smtp: SmtpSink,
    *,
    email: str,
    wallet: LocalAccount,
    device: Device,
    passkey: SoftAuthenticator,
) -> dict[str, Any]:
    """Stages 1–3; returns the J1 answer."""
    j0 = await email_stage(broker, smtp, email)
    await enroll(broker, j0, device, passkey)
    start = await siwe_start(broker, j0)
    response = await post_siwe(broker, j0, siwe_attempt(start, wallet, passkey))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
