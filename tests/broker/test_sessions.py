"""Session verification: a remembered signature never outlives its key, or a revocation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_encode
from agentkeys.broker import J0, J1, KeyRing, SessionIssuer, SqliteStateStore
from agentkeys.broker._jwt import decode_jwt
from agentkeys.broker.errors import SessionInvalid, SessionRevoked, SessionStageMismatch
from agentkeys.es256 import es256_sign

ISSUER = "http://127.0.0.1:1"
AUDIENCE = "agentkeys-broker"


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStateStore:
    return await SqliteStateStore.open(tmp_path / "state" / "broker.sqlite3")


def _ring() -> KeyRing:
    key = ec.generate_private_key(ec.SECP256R1())
    return KeyRing(key, [key.public_key()])


async def test_a_remembered_token_still_meets_every_other_check(store: SqliteStateStore) -> None:
    ring = _ring()
    issuer = SessionIssuer(ring, store, issuer=ISSUER, audience=AUDIENCE)
    now = int(time.time())
    token, session = await issuer.issue(stage=J1, subject="aa" * 32, now=now, lifetime=60, extra={})
    for _ in range(2):  # verified, then remembered
        assert await issuer.verify(token, now=now, stages=(J1,)) == session
    head, claims, signature = token.split(".")
    forged = ".".join((head, claims, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BA")))
    with pytest.raises(SessionInvalid):
        await issuer.verify(forged, now=now, stages=(J1,))
    with pytest.raises(SessionStageMismatch):  # the stage is checked every time
        await issuer.verify(token, now=now, stages=(J0,))
    await issuer.revoke(session)
    with pytest.raises(SessionRevoked):
        await issuer.verify(token, now=now, stages=(J1,))
    await store.aclose()


async def test_a_remembered_token_is_refused_once_its_key_is_retired(
    store: SqliteStateStore,
) -> None:
    ring = _ring()
    issuer = SessionIssuer(ring, store, issuer=ISSUER, audience=AUDIENCE)
    now = int(time.time())
    token, _ = await issuer.issue(stage=J1, subject="aa" * 32, now=now, lifetime=60, extra={})
    await issuer.verify(token, now=now, stages=(J1,))
    successor = ec.generate_private_key(ec.SECP256R1())
    ring.update(successor, [successor.public_key()])  # the old key no longer published
    with pytest.raises(SessionInvalid):
        await issuer.verify(token, now=now, stages=(J1,))
    await store.aclose()


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (b'{"sub": "a", "sub": "b"}', "duplicate key 'sub'"),
        (b'{"exp": NaN}', "NaN is not allowed"),
        (b'["sub"]', "token claims must be a JSON object"),
    ],
    ids=["duplicate member", "NaN", "not an object"],
)
def test_signed_claims_that_are_not_one_strict_json_object_are_refused(
    claims: bytes, reason: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    head = b64url_encode(b'{"alg":"ES256","kid":"k","typ":"JWT"}')
    signing_input = f"{head}.{b64url_encode(claims)}"
    token = f"{signing_input}.{b64url_encode(es256_sign(key, signing_input.encode()))}"
    with pytest.raises(SessionInvalid, match=reason):
        decode_jwt(token, {"k": key.public_key()})
