"""Fuzz targets: every parser that takes outside input, with the contract it must keep.

The contract (issue 11): on arbitrary input a parser returns a value or raises one of ITS
declared :class:`~agentkeys.errors.AgentkeysError` leaves, never ``KeyError``,
``IndexError``, ``struct.error``, ``UnicodeDecodeError``, ``RecursionError`` or anything
else. Each :class:`Target` reads one byte string the way its parser's caller would get it
(text decoded with ``surrogateescape`` so that invalid UTF-8 reaches text parsers as lone
surrogates; JSON decoded by the same strict loader the service uses), calls the parser and
re-raises anything outside ``allowed``. Refusals must also be well-formed errors (a string
reason, an ``{error, reason}`` body and a 4xx/5xx status).

The same targets run under hypothesis (tests/fuzz/test_contracts.py, small budgets in
``make test``), under atheris (``python -m tests.fuzz``) and over the recorded crashing
inputs in tests/fuzz/regressions/<target>/ (tests/fuzz/test_regressions.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys import envelope, omni
from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.broker import _passkey as passkey
from agentkeys.broker import _routes as broker_routes
from agentkeys.broker.errors import (
    K10ProofRejected,
    PasskeyAssertionRejected,
    PasskeyRegistrationRejected,
    PasskeySignCountReplayed,
)
from agentkeys.cap import (
    CapOp,
    CapPayload,
    SignedCap,
    new_cap_payload,
    parse_cap_token,
    sign_cap,
    verify_cap,
)
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.errors import (
    CapError,
    DomainError,
    EnvelopeError,
    InvalidAgentLabel,
    InvalidEncoding,
    InvalidIdentifier,
    InvalidKeyMaterial,
    InvalidServiceName,
    PopError,
)
from agentkeys.jwks import JsonWebKeySet, jwk_from_public_key, jwk_thumbprint, public_key_from_jwk
from agentkeys.pop import (
    MintPopClaims,
    NonceRegistry,
    PopProof,
    WorkerPopClaims,
    new_mint_pop_claims,
    sign_pop,
    verify_mint_pop,
    verify_worker_pop,
)
from agentkeys.service import decode, parse_json_object
from agentkeys.service.errors import BadRequest
from agentkeys.siwe import (
    SiweFormatError,
    SiweRejected,
    parse_rfc3339,
    parse_siwe,
    verify_siwe,
)
from attest.bundle import AttestationBundle, verify_bundle
from attest.errors import AttestationMalformed, AttestError
from attest.k10_signature import k10_sign
from attest.pin import CallerPin, PinAnswer, verify_pin_answer
from attest.quote import parse_attest
from attest.tpm_public import parse_tpm_public

# -- fixed material (deterministic, so a recorded input means the same thing next run) ---------

KEK = bytes(range(32))
WALLET = "0x" + "11" * 20
ACTOR = "22" * 32
OPERATOR = "33" * 32
SERVICE = "openai"
AUD = "agentkeys-worker"
NOW = 1_700_000_000
RP_ID = "agentkeys.localhost"
ORIGIN = "https://agentkeys.localhost"
SIWE_EXAMPLE = (
    "service.invalid wants you to sign in with your Ethereum account:\n"
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n"
    "\n"
    "I accept the ServiceOrg Terms of Service: https://service.invalid/tos\n"
    "\n"
    "URI: https://service.invalid/login\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: 32891756\n"
    "Issued At: 2021-09-30T16:25:24Z\n"
    "Expiration Time: 2021-09-30T19:25:24.5+02:00\n"
    "Not Before: 2021-09-30T16:25:24Z\n"
    "Request ID: r-1:@\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://[::1]:8443/my-web2-claim.json?x=1#f"
)


def p256_key(seed: int) -> ec.EllipticCurvePrivateKey:
    """A fixed P-256 key (test material only)."""
    return ec.derive_private_key(seed, ec.SECP256R1())


K1 = p256_key(0x1111)
K10 = p256_key(0x1010)
PASSKEY_KEY = p256_key(0x1111_1111)
K1_KID = jwk_thumbprint(K1.public_key())
K10_HASH = omni.device_key_hash(K10.public_key())


def text(data: bytes) -> str:
    """Bytes as text the way a lenient transport would hand them over (lone surrogates kept)."""
    return data.decode("utf-8", "surrogateescape")


class NotJson(Exception):
    """The harness's own input is not JSON: nothing reached the parser (not a finding)."""


def json_value(data: bytes) -> Any:
    """Bytes parsed as JSON by the service's strict loader, or :class:`NotJson`."""
    try:
        return parse_json_object(data)
    except BadRequest:
        raise NotJson from None


def check_error(exc: DomainError) -> None:
    """A refusal must be answerable: a string reason, a JSON body and an error status."""
    body = exc.to_json()
    if not (
        isinstance(exc.reason, str)
        and isinstance(body.get("error"), str)
        and body["reason"] == exc.reason
        and 400 <= exc.status <= 599
    ):
        raise AssertionError(f"ill-formed refusal {type(exc).__name__}: {body!r}")


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing: how bytes reach it and which refusals it may raise."""

    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[DomainError], ...]
    seeds: Callable[[], list[bytes]] = field(default=lambda: [])

    def check(self, data: bytes) -> None:
        """Run the parser on ``data``; raise anything that breaks the contract."""
        try:
            self.run(data)
        except NotJson:
            return
        except self.allowed as exc:
            check_error(exc)


# -- envelopes (SPEC section 4) ----------------------------------------------------------------


def _envelope_open(data: bytes) -> object:
    envelope.parse_header(data)
    return envelope.open_envelope(data, kek=KEK, service=SERVICE, wallet=WALLET, actor_omni=ACTOR)


def _envelope_seeds() -> list[bytes]:
    nonce = bytes(12)
    return [
        envelope.seal_v1(b"sk-1", kek=KEK, wallet=WALLET, service=SERVICE, nonce=nonce),
        envelope.seal_v2_legacy(b"sk-2", kek=KEK, actor_omni=ACTOR, service=SERVICE, nonce=nonce),
        envelope.seal_v4(b"sk-4", kek=KEK, actor_omni=ACTOR, service=SERVICE, epoch=7, nonce=nonce),
    ]


# -- caps and their canonicalisation (SPEC section 5) ------------------------------------------


def signed_cap(**changes: Any) -> SignedCap:
    """A valid cap signed by the fixed K1 (fields overridable)."""
    fields: dict[str, Any] = {
        "op": CapOp.FETCH,
        "operator_omni": OPERATOR,
        "actor_omni": ACTOR,
        "service": SERVICE,
        "device_key_hash": K10_HASH,
        "k3_epoch": 1,
        "aud": AUD,
        "now": NOW,
    }
    fields.update(changes)
    return sign_cap(new_cap_payload(**fields), K1, K1_KID)


def _cap_token(data: bytes) -> object:
    signed = parse_cap_token(text(data))
    # whatever parses must canonicalise and round-trip to an equal cap
    again = parse_cap_token(signed.to_token())
    if again != signed:
        raise AssertionError("cap token does not round-trip")
    return signed


def _cap_payload(data: bytes) -> object:
    payload = CapPayload.from_json_dict(json_value(data))
    if CapPayload.from_json_dict(json.loads(envelope_free_canonical(payload))) != payload:
        raise AssertionError("cap payload does not round-trip through its canonical bytes")
    return payload


def envelope_free_canonical(payload: CapPayload) -> bytes:
    """The canonical bytes of a payload (RFC 8785) for the round-trip check."""
    from agentkeys.cap import canonical_bytes

    return canonical_bytes(payload)


def _cap_verify(data: bytes) -> object:
    return verify_cap(
        text(data),
        keys={K1_KID: K1.public_key()},
        expected_aud=AUD,
        now=NOW + 1,
        expected_op=CapOp.FETCH,
    )


def _cap_seeds() -> list[bytes]:
    return [signed_cap().to_token().encode(), signed_cap(op=CapOp.LIST).to_token().encode()]


def _cap_payload_seeds() -> list[bytes]:
    return [json.dumps(signed_cap().payload.to_json_dict()).encode()]


# -- K10 proof of possession (SPEC section 5) --------------------------------------------------


def _pop_header(data: bytes) -> object:
    proof = PopProof.from_header_value(text(data))
    if PopProof.from_header_value(proof.to_header_value()) != proof:
        raise AssertionError("PoP header does not round-trip")
    return proof


_BYTES_FIELDS = frozenset({"nonce", "cap_digest", "body_sha256"})


def _bytes_field(name: str, value: object) -> object:
    if name in _BYTES_FIELDS and isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            return value
    return value


def _pop_claims(data: bytes) -> object:
    """A JSON object of claims + signature, as a broker or worker rebuilds it from a request."""
    obj = json_value(data)
    signature = obj.pop("signature", "")
    registry = NonceRegistry(capacity=4)
    if "cap_digest" in obj:
        fields: dict[str, Any] = {k: _bytes_field(k, v) for k, v in obj.items()}
        worker = WorkerPopClaims(**fields)
        return verify_worker_pop(
            worker,
            signature,
            public_key=K10.public_key(),
            expected_device_key_hash=K10_HASH,
            now=NOW,
            nonces=registry,
        )
    claims: dict[str, Any] = {k: _bytes_field(k, v) for k, v in obj.items()}
    mint = MintPopClaims(**claims)
    return verify_mint_pop(mint, signature, public_key=K10.public_key(), now=NOW, nonces=registry)


def _pop_claims_run(data: bytes) -> object:
    try:
        return _pop_claims(data)
    except TypeError as exc:  # unknown / missing keyword: the caller's own JSON decoding
        if "argument" in str(exc):
            raise NotJson from None
        raise


def _pop_seeds() -> list[bytes]:
    claims = new_mint_pop_claims(
        op=CapOp.FETCH,
        operator_omni=OPERATOR,
        actor_omni=ACTOR,
        service=SERVICE,
        device_key_hash=K10_HASH,
        now=NOW,
    )
    signature = sign_pop(claims, K10)
    mint = {
        "op": "fetch",
        "operator_omni": OPERATOR,
        "actor_omni": ACTOR,
        "service": SERVICE,
        "device_key_hash": K10_HASH,
        "nonce": claims.nonce.hex(),
        "timestamp": NOW,
        "signature": signature,
    }
    header = PopProof(NOW, claims.nonce, signature).to_header_value()
    return [json.dumps(mint).encode(), header.encode()]


# -- JWKS --------------------------------------------------------------------------------------


def _jwks(data: bytes) -> object:
    keys = JsonWebKeySet.from_json(data)
    if JsonWebKeySet.from_json(keys.to_json()).by_kid.keys() != keys.by_kid.keys():
        raise AssertionError("JWKS does not round-trip")
    return keys


def _jwk(data: bytes) -> object:
    return public_key_from_jwk(json_value(data))


def _jwks_seeds() -> list[bytes]:
    keys = JsonWebKeySet.from_public_keys([K1.public_key(), K10.public_key()])
    return [keys.to_json(), json.dumps(jwk_from_public_key(K1.public_key())).encode()]


def _b64url(data: bytes) -> object:
    decoded = b64url_decode(text(data))
    if b64url_encode(decoded) != text(data):
        raise AssertionError("base64url is not canonical")
    return decoded


# -- identifiers (SPEC section 3) --------------------------------------------------------------

_INJECTION = set("*?${}/")


def _omni(data: bytes) -> object:
    """The first byte picks the normaliser; the rest is its input. No output may carry a
    character that acts inside an S3 key or IAM policy variable."""
    if not data:
        return None
    selector, value = data[0] % 6, text(data[1:])
    out: str
    if selector == 0:
        out = omni.normalize_hex32(value)
    elif selector == 1:
        out = omni.normalize_wallet(value)
    elif selector == 2:
        out = omni.normalize_service(value)
    elif selector == 3:
        out = omni.agent_omni(OPERATOR, value)
    elif selector == 4:
        out = omni.identity_omni("email", value)
    else:
        kind, _, rest = value.partition(":")
        out = omni.identity_omni(kind, rest)
    if _INJECTION & set(out) or not out.isascii():
        raise AssertionError("a normalised identifier carries a wildcard / variable character")
    return out


# -- SIWE (EIP-4361) ---------------------------------------------------------------------------


def _siwe(data: bytes) -> object:
    message = parse_siwe(text(data))
    if message.to_text() != text(data):
        raise AssertionError("SIWE text does not round-trip")
    return message


def _siwe_verify(data: bytes) -> object:
    body, _, signature = text(data).partition("\x00")
    return verify_siwe(
        body,
        signature or "0x" + "00" * 65,
        expected_domain="service.invalid",
        expected_nonce="32891756",
        expected_chain_id=1,
        now=1633019200,
    )


def _rfc3339(data: bytes) -> object:
    return parse_rfc3339(text(data)).timestamp()


# -- attest parsers ----------------------------------------------------------------------------


def _bundle(data: bytes) -> object:
    bundle = AttestationBundle.from_json(data)
    return verify_bundle(bundle, expected_nonce=None)


def _pin(data: bytes) -> object:
    pin = CallerPin.from_json(data)
    return verify_pin_answer(
        pin, PinAnswer(kind=pin.kind, signature=bytes(64)), expected_nonce=bytes(32)
    )


def _pin_answer(data: bytes) -> object:
    return PinAnswer.from_json(data)


@cache
def _attest_seed_material() -> list[bytes]:
    from attest.pin import software_pin

    pin = software_pin("caller-1", K10)
    return [json.dumps(pin.to_json()).encode()]


# -- WebAuthn responses as the broker receives them --------------------------------------------


def _authenticator() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, private_key=PASSKEY_KEY)


CHALLENGE = bytes(range(32))


def _registration(data: bytes) -> object:
    credential = json_value(data)
    k10_signature = b64url_encode(k10_sign(K10, CHALLENGE))
    point = omni.p256_point_bytes(K10.public_key())
    return passkey.verify_enrollment(
        credential,
        challenge=CHALLENGE,
        k10_point=point,
        k10_signature=k10_signature,
        rp_id=RP_ID,
        origin=ORIGIN,
    )


def _assertion(data: bytes) -> object:
    credential = json_value(data)
    passkey.credential_id_of(credential)
    return passkey.verify_assertion(
        credential,
        challenge=CHALLENGE,
        public_key=_authenticator().cose_key(),
        stored_sign_count=0,
        rp_id=RP_ID,
        origin=ORIGIN,
    )


def _registration_seeds() -> list[bytes]:
    return [json.dumps(_authenticator().create(CHALLENGE).to_json()).encode()]


def _assertion_seeds() -> list[bytes]:
    return [json.dumps(_authenticator().get(CHALLENGE, sign_count=1).to_json()).encode()]


# -- the service base's request decoding (every broker request dataclass) ----------------------

BROKER_REQUESTS: dict[str, type[Any]] = {
    route.name: route.request for route in broker_routes.ROUTES if route.request is not None
}
"""Request dataclass of each broker route that takes a body (from its one declaration)."""


def _service_json(data: bytes) -> object:
    if not data:
        return None
    classes = sorted(set(BROKER_REQUESTS.values()), key=lambda c: c.__name__)
    cls = classes[data[0] % len(classes)]
    return decode(cls, parse_json_object(data[1:]))


def _service_json_seeds() -> list[bytes]:
    return [b"\x00" + json.dumps({"email": "a@b.c"}).encode(), b"\x01{}"]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("envelope", _envelope_open, (EnvelopeError,), _envelope_seeds),
        Target("cap_token", _cap_token, (CapError,), _cap_seeds),
        Target("cap_payload", _cap_payload, (CapError,), _cap_payload_seeds),
        Target("cap_verify", _cap_verify, (CapError,), _cap_seeds),
        Target("pop_header", _pop_header, (PopError,), lambda: _pop_seeds()[1:]),
        Target("pop_claims", _pop_claims_run, (PopError,), lambda: _pop_seeds()[:1]),
        Target("jwks", _jwks, (InvalidEncoding, InvalidKeyMaterial), _jwks_seeds),
        Target("jwk", _jwk, (InvalidKeyMaterial,), lambda: _jwks_seeds()[1:]),
        Target("b64url", _b64url, (InvalidEncoding,), lambda: [b"AQID", b"_-8"]),
        Target(
            "omni",
            _omni,
            (InvalidIdentifier, InvalidServiceName, InvalidAgentLabel),
            lambda: [
                b"\x00" + ACTOR.encode(),
                b"\x01" + WALLET.encode(),
                b"\x02OpenAI",
                b"\x03agent-1",
                b"\x04a@b.c",
                b"\x05evm:" + WALLET.encode(),
            ],
        ),
        Target("siwe", _siwe, (SiweFormatError,), lambda: [SIWE_EXAMPLE.encode()]),
        Target(
            "siwe_verify",
            _siwe_verify,
            (SiweFormatError, SiweRejected),
            lambda: [SIWE_EXAMPLE.encode()],
        ),
        Target("rfc3339", _rfc3339, (SiweFormatError,), lambda: [b"2016-12-31T23:59:60.5+01:00"]),
        Target("tpm_attest", parse_attest, (AttestationMalformed,)),
        Target("tpm_public", parse_tpm_public, (AttestationMalformed,)),
        Target("attest_bundle", _bundle, (AttestError,)),
        Target("caller_pin", _pin, (AttestError,), _attest_seed_material),
        Target("pin_answer", _pin_answer, (AttestationMalformed,)),
        Target(
            "webauthn_registration",
            _registration,
            (K10ProofRejected, PasskeyRegistrationRejected),
            _registration_seeds,
        ),
        Target(
            "webauthn_assertion",
            _assertion,
            (PasskeyAssertionRejected, PasskeySignCountReplayed),
            _assertion_seeds,
        ),
        Target("service_json", _service_json, (BadRequest,), _service_json_seeds),
    )
}
