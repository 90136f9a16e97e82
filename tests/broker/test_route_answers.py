"""Each route answers the response type it declares (and publishes in ``/openapi.json``).

The broker fixture's client checks every 200/202 answer against its route's declared type
(tests/broker/_answers.py), so every flow in tests/broker validates what it receives; this
test walks the main routes once, over HTTP against the real broker and chain, and requires
that each was checked.
"""

from __future__ import annotations

import typing
from types import UnionType

import pytest
from eth_account import Account

from agentkeys.broker import ROUTES
from agentkeys.cap import CapOp
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.service import OPENAPI_PATH
from agentkeys.service.errors import BadRequest
from tests.broker._answers import AnswerCheck
from tests.broker._flow import bearer, email_stage, enroll, full_sign_in, j1_for, sign_in
from tests.broker.conftest import ORIGIN, RP_ID, Device, Operator, RunningBroker
from tests.broker.test_cap_mint import mint

MAIN_ROUTES = {
    ("email_start", 200),
    ("email_poll", 202),
    ("email_verify", 200),
    ("email_poll", 200),
    ("passkey_register_options", 200),
    ("passkey_register_verify", 200),
    ("siwe_start", 200),
    ("siwe_verify", 200),
    ("device_challenge", 200),
    ("device_session", 200),
    ("cap_fetch", 200),
    ("mint_oidc_challenge", 200),
    ("mint_oidc_jwt", 200),
    ("session_info", 200),
    ("oidc_configuration", 200),
    ("session_revoke", 200),
    ("health", 200),
    ("cap_jwks", 200),
    ("oidc_jwks", 200),
}


async def test_the_main_routes_answer_their_declared_types(
    broker: RunningBroker, smtp: SmtpSink, operator: Operator
) -> None:
    wallet = Account.create()
    signed_in = await full_sign_in(
        broker,
        smtp,
        email="answers@example.org",
        wallet=wallet,
        device=Device.generate(),
        passkey=SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN),
    )
    j1 = signed_in["session"]
    challenge = await broker.http.post("/v1/mint-oidc-jwt/challenge", headers=bearer(j1))
    assert challenge.status_code == 200, challenge.text
    assert challenge.json()["required"] is False  # this wallet has no master on chain
    token = await broker.http.post("/v1/mint-oidc-jwt", headers=bearer(j1))
    assert token.status_code == 200, token.text
    device = await sign_in(broker, operator.master)
    assert device.status_code == 200, device.text
    for session in (j1, device.json()["session"]):  # the operator's shape, the device's
        described = await broker.http.get("/v1/auth/session", headers=bearer(session))
        assert described.status_code == 200, described.text
    assert (await broker.http.get("/.well-known/openid-configuration")).status_code == 200
    minted = await mint(
        broker, await j1_for(broker, operator), CapOp.FETCH, operator=operator.omni,
        actor=operator.omni, service="openai", device=operator.master,
    )  # fmt: skip
    assert minted.status_code == 200, minted.text
    revoked = await broker.http.post("/v1/auth/session/revoke", headers=bearer(j1))
    assert revoked.status_code == 200, revoked.text
    for path in ("/v1/health", "/v1/cap/jwks.json", "/.well-known/jwks.json"):
        assert (await broker.http.get(path)).status_code == 200, path
    assert not MAIN_ROUTES - broker.answers.seen


async def test_a_member_is_left_out_only_when_its_default_is_none(
    broker: RunningBroker, smtp: SmtpSink
) -> None:
    """``siwe_start`` answers ``message`` only when the request named the wallet."""

    j0 = await email_stage(broker, smtp, "optional@example.org")
    await enroll(broker, j0, Device.generate(), SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN))
    bare = await broker.http.post("/v1/auth/siwe/start", json={}, headers=bearer(j0))
    assert bare.status_code == 200, bare.text
    assert "message" not in bare.json()
    wallet = Account.create().address
    named = await broker.http.post(
        "/v1/auth/siwe/start", json={"wallet": wallet}, headers=bearer(j0)
    )
    assert named.status_code == 200, named.text
    assert wallet in named.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"request": "abc"},  # expires_at missing
        {"request": "abc", "expires_at": 1, "extra": 1},  # a member the type lacks
        {"request": "abc", "expires_at": "1"},  # a string for an integer
    ],
)
def test_an_answer_of_another_shape_fails_the_check(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        AnswerCheck().check("POST", "/v1/auth/email/start", 200, body)


@pytest.mark.parametrize(
    "body",
    [
        {"stage": "j1", "subject": "ab", "wallet": None, "expires_at": 1},  # identity_omni
        {"stage": "device", "subject": "ab", "operator_omni": "cd", "expires_at": 1},
        {"stage": "j1", "subject": "ab", "wallet": None, "identity_omni": None,
         "device_key_hash": "ef", "expires_at": 1},  # a member of the other shape
    ],
)  # fmt: skip
def test_a_session_answer_of_neither_shape_fails_the_check(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        AnswerCheck().check("GET", "/v1/auth/session", 200, body)


async def test_the_openapi_document_publishes_each_declared_answer(
    broker: RunningBroker,
) -> None:
    doc = (await broker.http.get(OPENAPI_PATH)).json()
    for route in ROUTES:
        responses = doc["paths"][route.path][route.method.lower()]["responses"]
        for status, answer in ((200, route.response), (202, route.accepted)):
            schema = responses.get(str(status), {}).get("content", {})
            schema = schema.get("application/json", {}).get("schema", {})
            if answer is None:
                assert "$ref" not in schema, route.name
                continue
            members = typing.get_args(answer) if isinstance(answer, UnionType) else (answer,)
            refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in members]
            assert schema == (refs[0] if len(refs) == 1 else {"oneOf": refs}), route.name
            for member in members:
                component = doc["components"]["schemas"][member.__name__]
                assert component["additionalProperties"] is False
    minted = doc["components"]["schemas"]["CapMinted"]
    assert set(minted["required"]) == {"cap", "token", "scope_source", "expires_at"}
    siwe = doc["components"]["schemas"]["SiweChallenge"]
    assert "message" not in siwe["required"]
