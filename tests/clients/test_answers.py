"""How the typed clients read a peer's answer: refusals typed, malformed answers refused.

Pure reads over ``httpx.Response`` values (no peer: what a real broker or worker answers is
covered by tests/broker/test_cap_mint.py, tests/worker/test_client.py and the daemon's
tests); each malformed answer must raise the exact error, never a ``KeyError``.
"""

from __future__ import annotations

import json

import httpx
import pytest

import agentkeys.clients
from agentkeys.clients import (
    AnswerMalformed,
    AwsCredentials,
    BrokerClient,
    DeviceChallenge,
    DeviceGrant,
    Fetched,
    Listed,
    MintedCap,
    OidcChallenge,
    PeerRefused,
    PeerUnreachable,
    SessionInfo,
    Stored,
    TornDown,
)
from agentkeys.clients._answer import Answer, read_answer

HEX = "ab" * 32


def _answer(doc: object, status: int = 200, who: str = "broker") -> Answer:
    return read_answer(httpx.Response(status, content=json.dumps(doc).encode()), who=who, path="/p")


def test_the_exported_names_are_pinned() -> None:
    assert sorted(agentkeys.clients.__all__) == [
        "AnswerMalformed",
        "AwsCredentials",
        "BrokerClient",
        "ClientError",
        "DeviceChallenge",
        "DeviceGrant",
        "Fetched",
        "Listed",
        "ListedService",
        "MintedCap",
        "OidcChallenge",
        "PeerRefused",
        "PeerUnreachable",
        "PeerUntrusted",
        "SessionInfo",
        "SignerClient",
        "Stored",
        "TornDown",
        "WorkerClient",
    ]


def test_a_refusal_carries_status_code_and_reason() -> None:
    with pytest.raises(PeerRefused) as caught:
        _answer({"error": "device_revoked", "reason": "the device is revoked\non chain"}, 403)
    exc = caught.value
    assert (exc.who, exc.path, exc.http_status) == ("broker", "/p", 403)
    assert exc.code == "device_revoked"
    assert exc.peer_reason == "the device is revoked\non chain"
    assert exc.reason == "the broker refused /p: HTTP 403 device_revoked"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b'{"error": "Not A Code!", "reason": 7}',
        b'["device_revoked"]',
        b'{"error": "' + b"a" * 65 + b'"}',
    ],
)
def test_a_refusal_without_a_plain_code_has_none(body: bytes) -> None:
    with pytest.raises(PeerRefused) as caught:
        read_answer(httpx.Response(502, content=body), who="worker", path="/v1/cred/fetch")
    assert caught.value.code is None
    assert caught.value.peer_reason is None
    assert caught.value.reason.endswith("HTTP 502 (no error code)")


def test_an_oversized_refusal_is_not_parsed() -> None:
    body = json.dumps({"error": "chain_unavailable", "reason": "x" * 100}).encode()
    with pytest.raises(PeerRefused) as caught:
        read_answer(httpx.Response(503, content=body), who="broker", path="/p", max_bytes=50)
    assert caught.value.code is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "the broker's answer is not JSON"),
        (b"[1, 2]", "the broker's answer is not a JSON object"),
        (b'{"a": "' + b"x" * 100 + b'"}', "the broker's answer is too large"),
    ],
)
def test_a_200_that_is_not_a_small_json_object_is_malformed(content: bytes, why: str) -> None:
    with pytest.raises(AnswerMalformed, match=f"^{why}$"):
        read_answer(httpx.Response(200, content=content), who="broker", path="/p", max_bytes=64)


async def test_no_answer_is_unreachable() -> None:
    async with httpx.AsyncClient(base_url="http://127.0.0.1:1", trust_env=False) as http:
        with pytest.raises(PeerUnreachable) as caught:
            await BrokerClient(http).session_info("s")
    assert caught.value.transport == "ConnectError"
    assert caught.value.path == "/v1/auth/session"
    assert "127.0.0.1" not in caught.value.reason


GRANT = {
    "session": "tok",
    "stage": "device",
    "operator_omni": HEX,
    "actor_omni": HEX,
    "device_key_hash": HEX,
    "expires_at": 100,
}


def test_a_device_grant_is_read_and_its_token_not_printed() -> None:
    grant = DeviceGrant.from_answer(_answer(GRANT))
    assert (grant.session, grant.operator_omni, grant.expires_at) == ("tok", HEX, 100)
    assert "tok" not in repr(grant)


@pytest.mark.parametrize(
    ("change", "member"),
    [
        ({"session": ""}, "session"),
        ({"session": "t\u00e9"}, "session"),
        ({"operator_omni": "AB" * 32}, "operator_omni"),
        ({"actor_omni": None}, "actor_omni"),
        ({"device_key_hash": "ab"}, "device_key_hash"),
        ({"expires_at": True}, "expires_at"),
        ({"expires_at": "100"}, "expires_at"),
    ],
)
def test_a_malformed_device_grant_names_its_member(change: dict[str, object], member: str) -> None:
    with pytest.raises(AnswerMalformed, match=f"lacks {member}"):
        DeviceGrant.from_answer(_answer({**GRANT, **change}))


@pytest.mark.parametrize(
    ("challenge", "why"),
    [("zz" * 32, "not hex"), ("ab" * 31, "not 32 bytes"), (None, "lacks challenge")],
)
def test_a_malformed_challenge_is_refused(challenge: object, why: str) -> None:
    doc = {"challenge": challenge, "audience": "agentkeys-broker", "expires_at": 1}
    with pytest.raises(AnswerMalformed, match=why):
        DeviceChallenge.from_answer(_answer(doc))
    doc["challenge"] = "ab" * 32
    assert DeviceChallenge.from_answer(_answer(doc)).challenge == bytes.fromhex("ab" * 32)


def test_a_mint_answer_without_a_valid_cap_is_malformed() -> None:
    doc = {"cap": {"payload": {}, "kid": "k", "broker_sig": "s"}, "token": "t"}
    with pytest.raises(AnswerMalformed, match=r"^the broker's cap is malformed: "):
        MintedCap.from_answer(_answer({**doc, "scope_source": "chain"}))


def test_session_info_reads_optional_members_strictly() -> None:
    doc = {"stage": "j1", "subject": HEX, "expires_at": 5, "wallet": "0xab"}
    info = SessionInfo.from_answer(_answer(doc))
    assert (info.stage, info.wallet, info.actor_omni) == ("j1", "0xab", None)
    with pytest.raises(AnswerMalformed, match="wallet is not a string"):
        SessionInfo.from_answer(_answer({**doc, "wallet": 1}))


def test_a_fetch_answer_keeps_everything_but_the_credential() -> None:
    doc = {"credential": "c2stMQ", "source": "v2", "key": "bots/x", "migration": {}}
    fetched = Fetched.from_answer(_answer(doc))
    assert fetched.credential == b"sk-1"
    assert fetched.answer == {"source": "v2", "key": "bots/x", "migration": {}}
    assert "sk-1" not in repr(fetched)
    with pytest.raises(AnswerMalformed, match="credential is not base64url"):
        Fetched.from_answer(_answer({**doc, "credential": "c2stMQ=="}))
    with pytest.raises(AnswerMalformed, match="lacks source"):
        Fetched.from_answer(_answer({**doc, "source": 2}))


@pytest.mark.parametrize("services", [None, "openai", [["openai", "v2"]], [{"service": "openai"}]])
def test_a_malformed_service_list_is_refused(services: object) -> None:
    with pytest.raises(AnswerMalformed):
        Listed.from_answer(_answer({"services": services}))


def test_store_list_and_teardown_answers_are_read() -> None:
    assert Stored.from_answer(_answer({"key": "k", "envelope_version": 4})).envelope_version == 4
    listed = Listed.from_answer(_answer({"services": [{"service": "a", "source": "v1"}]}))
    assert [(s.service, s.source) for s in listed.services] == [("a", "v1")]
    torn = TornDown.from_answer(_answer({"deleted": {"v2": 1, "v1": 0}}))
    assert torn.deleted == {"v2": 1, "v1": 0}
    for wrong in ({"v2": True}, {"v2": -1}, [1], None):
        with pytest.raises(AnswerMalformed, match="lacks deleted"):
            TornDown.from_answer(_answer({"deleted": wrong}))


def test_an_accepted_status_is_an_answer_and_keeps_its_status() -> None:
    pending = read_answer(
        httpx.Response(202, content=b'{"status": "pending"}'),
        who="broker", path="/v1/auth/email/poll", accept=frozenset({200, 202}),
    )  # fmt: skip
    assert (pending.status, pending.doc) == (202, {"status": "pending"})
    with pytest.raises(PeerRefused):
        _answer({"status": "pending"}, 202)


def test_an_oidc_challenge_is_read_only_when_required() -> None:
    assert OidcChallenge.from_answer(_answer({"required": False})) == OidcChallenge(False)
    doc = {"required": True, "challenge_id": "c1", "webauthn": {"challenge": "AAEC"}}
    read = OidcChallenge.from_answer(_answer(doc))
    assert (read.challenge_id, read.challenge) == ("c1", b"\0\1\2")
    for wrong, why in (({"webauthn": None}, "passkey options"),
                       ({"webauthn": {"challenge": "AA=="}}, "not base64url"),
                       ({"challenge_id": 1}, "lacks challenge_id")):  # fmt: skip
        with pytest.raises(AnswerMalformed, match=why):
            OidcChallenge.from_answer(_answer({**doc, **wrong}))


CREDENTIALS = {
    "access_key_id": "AK",
    "secret_access_key": "secret-1",
    "session_token": "token-1",
    "expiration": "2030-01-01T00:00:00",
}


def test_signer_credentials_are_read_in_utc_and_their_secrets_not_printed() -> None:
    creds = AwsCredentials.from_answer(_answer({"credentials": CREDENTIALS}, who="signer"))
    assert creds.expiration.tzinfo is not None
    assert "secret-1" not in repr(creds)
    assert "token-1" not in repr(creds)
    for wrong, why in (({"expiration": "soon"}, "ISO 8601"),
                       ({"session_token": ""}, "lacks session_token")):  # fmt: skip
        with pytest.raises(AnswerMalformed, match=why):
            AwsCredentials.from_answer(_answer({"credentials": {**CREDENTIALS, **wrong}}))
    with pytest.raises(AnswerMalformed, match=r"^the signer's answer lacks credentials$"):
        AwsCredentials.from_answer(_answer({"credentials": None}, who="signer"))
