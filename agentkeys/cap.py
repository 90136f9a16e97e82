"""Capability tokens ("caps"): payload model, canonical bytes, ES256 sign and verify.

Implements SPEC section 5. A cap authorises one operation on one service for one actor
for a short time (default 300 s, at most 1800 s).

* Payload: :class:`CapPayload`, validated and normalised on construction.
* Canonical bytes: RFC 8785 JSON of the payload object (:func:`canonical_bytes`).
* ``broker_sig``: ES256 by K1 over the canonical bytes, base64url (no padding) of raw
  r ‖ s; deterministic (RFC 6979).
* **Wire form** (the one place it is defined): the JSON object

      {"payload": {<payload members>}, "kid": "<K1 kid>", "broker_sig": "<base64url r||s>"}

  and, where a single string is needed (an HTTP header), the *token*: base64url (no
  padding) of that object's RFC 8785 bytes (:meth:`SignedCap.to_token`). Tokens are at
  most :data:`MAX_TOKEN_CHARS` characters. Parsers refuse duplicate or unknown members and
  payloads not already in canonical form (lowercase hex, normalised service).
* :func:`verify_cap` checks, in order: wire form, kid, signature, audience, operation,
  not-yet-valid, expiry; and returns a frozen :class:`VerifiedCap`.
  The per-actor chain binding (SPEC section 5) is the caller's next step.

Time is integer Unix seconds.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.errors import (
    CapAudienceMismatch,
    CapExpired,
    CapInvalid,
    CapKeyUnknown,
    CapLifetimeTooLong,
    CapNotYetValid,
    CapOperationMismatch,
    CapSignatureInvalid,
    FormatError,
    InvalidEncoding,
    SignatureMalformed,
)
from agentkeys.es256 import es256_sign, es256_verify
from agentkeys.omni import normalize_hex32, normalize_service
from agentkeys.strict_json import StrictJsonError, loads_object

__all__ = [
    "CAP_VERSION",
    "DEFAULT_CAP_LIFETIME",
    "DEFAULT_MAX_SKEW",
    "MAX_CAP_LIFETIME",
    "MAX_TOKEN_CHARS",
    "CapOp",
    "CapPayload",
    "SignedCap",
    "VerifiedCap",
    "canonical_bytes",
    "cap_digest",
    "new_cap_payload",
    "parse_cap_token",
    "sign_cap",
    "verify_cap",
]

CAP_VERSION = 2
DEFAULT_CAP_LIFETIME = 300
MAX_CAP_LIFETIME = 1800
DEFAULT_MAX_SKEW = 5
MAX_TOKEN_CHARS = 8192
_MAX_TIME = 2**53 - 1  # RFC 8785 represents integers exactly only up to here
_MAX_EPOCH = 0xFFFFFFFF
_NONCE = re.compile(r"[0-9a-f]{32}", re.ASCII)
_AUD = re.compile(r"[!-~]{1,256}", re.ASCII)
_KID = re.compile(r"[A-Za-z0-9._~-]{1,128}", re.ASCII)
_PAYLOAD_MEMBERS = frozenset(
    {
        "v",
        "op",
        "operator_omni",
        "actor_omni",
        "service",
        "device_key_hash",
        "k3_epoch",
        "issued_at",
        "expires_at",
        "nonce",
        "aud",
    }
)
_WIRE_MEMBERS = frozenset({"payload", "kid", "broker_sig"})


class CapOp(StrEnum):
    """The operations a cap can authorise."""

    FETCH = "fetch"
    STORE = "store"
    TEARDOWN = "teardown"
    LIST = "list"


def _int_field(name: str, value: object, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise CapInvalid(f"{name} must be an integer in 0..{upper}")
    return value


def _hex32_field(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise CapInvalid(f"{name} must be a string")
    try:
        return normalize_hex32(value)
    except FormatError:
        raise CapInvalid(f"{name} must be 64 hex digits") from None


@dataclass(frozen=True, kw_only=True)
class CapPayload:
    """The signed content of a cap (SPEC section 5), validated and normalised.

    Identifier fields accept any form :func:`~agentkeys.omni.normalize_hex32` accepts and
    are stored as 64 lowercase hex; ``service`` is lowercased; ``nonce`` is 16 bytes as 32
    lowercase hex.

    Raises:
        CapInvalid: a field of the wrong type or form, or ``expires_at <= issued_at``.
        CapLifetimeTooLong: ``expires_at - issued_at`` > :data:`MAX_CAP_LIFETIME`.
    """

    op: CapOp
    operator_omni: str
    actor_omni: str
    service: str
    device_key_hash: str
    k3_epoch: int
    issued_at: int
    expires_at: int
    nonce: str
    aud: str
    v: int = field(default=CAP_VERSION)

    def __post_init__(self) -> None:
        if type(self.v) is not int or self.v != CAP_VERSION:
            raise CapInvalid(f"cap version must be {CAP_VERSION}")
        try:
            op = CapOp(self.op)
        except ValueError:
            raise CapInvalid("op must be one of fetch, store, teardown, list") from None
        if not isinstance(self.service, str):
            raise CapInvalid("service must be a string")
        try:
            service = normalize_service(self.service)
        except FormatError:
            raise CapInvalid("service is not a valid service name") from None
        if (
            not isinstance(self.nonce, str)
            or not self.nonce.isascii()
            or _NONCE.fullmatch(self.nonce.lower()) is None
        ):
            raise CapInvalid("nonce must be 16 bytes as 32 hex digits")
        if not isinstance(self.aud, str) or _AUD.fullmatch(self.aud) is None:
            raise CapInvalid("aud must be 1..256 printable ASCII characters")
        _int_field("k3_epoch", self.k3_epoch, _MAX_EPOCH)
        issued_at = _int_field("issued_at", self.issued_at, _MAX_TIME)
        expires_at = _int_field("expires_at", self.expires_at, _MAX_TIME)
        if expires_at <= issued_at:
            raise CapInvalid("expires_at must be after issued_at")
        if expires_at - issued_at > MAX_CAP_LIFETIME:
            raise CapLifetimeTooLong(
                f"cap lifetime {expires_at - issued_at} s exceeds {MAX_CAP_LIFETIME} s"
            )
        normalised = {
            "op": op,
            "operator_omni": _hex32_field("operator_omni", self.operator_omni),
            "actor_omni": _hex32_field("actor_omni", self.actor_omni),
            "device_key_hash": _hex32_field("device_key_hash", self.device_key_hash),
            "service": service,
            "nonce": self.nonce.lower(),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @property
    def lifetime(self) -> int:
        """``expires_at - issued_at`` in seconds."""
        return self.expires_at - self.issued_at

    def to_json_dict(self) -> dict[str, str | int]:
        """The payload as the JSON object that is canonicalised and signed."""
        return {
            "v": self.v,
            "op": self.op.value,
            "operator_omni": self.operator_omni,
            "actor_omni": self.actor_omni,
            "service": self.service,
            "device_key_hash": self.device_key_hash,
            "k3_epoch": self.k3_epoch,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "nonce": self.nonce,
            "aud": self.aud,
        }

    @classmethod
    def from_json_dict(cls, obj: object) -> CapPayload:
        """Parse a payload object strictly: exactly the spec members, already canonical.

        Raises:
            CapInvalid: missing / unknown members, wrong types, non-canonical values.
            CapLifetimeTooLong: see the class.
        """
        if not isinstance(obj, dict) or set(obj) != _PAYLOAD_MEMBERS:
            raise CapInvalid("cap payload must have exactly the members of SPEC section 5")
        for name in ("op", "operator_omni", "actor_omni", "service", "device_key_hash"):
            if not isinstance(obj[name], str):
                raise CapInvalid(f"{name} must be a string")
        payload = cls(
            v=obj["v"],
            op=obj["op"],
            operator_omni=obj["operator_omni"],
            actor_omni=obj["actor_omni"],
            service=obj["service"],
            device_key_hash=obj["device_key_hash"],
            k3_epoch=obj["k3_epoch"],
            issued_at=obj["issued_at"],
            expires_at=obj["expires_at"],
            nonce=obj["nonce"],
            aud=obj["aud"],
        )
        if payload.to_json_dict() != obj:
            raise CapInvalid("cap payload is not in canonical form (lowercase hex and names)")
        return payload


def _coerce_op(op: CapOp | str) -> CapOp:
    try:
        return CapOp(op)
    except ValueError:
        raise CapInvalid("op must be one of fetch, store, teardown, list") from None


def new_cap_payload(
    *,
    op: CapOp | str,
    operator_omni: str,
    actor_omni: str,
    service: str,
    device_key_hash: str,
    k3_epoch: int,
    aud: str,
    now: int,
    lifetime: int = DEFAULT_CAP_LIFETIME,
) -> CapPayload:
    """A fresh payload issued at ``now`` for ``lifetime`` seconds with a random nonce.

    Raises:
        CapInvalid, CapLifetimeTooLong: see :class:`CapPayload`.
    """
    return CapPayload(
        op=_coerce_op(op),
        operator_omni=operator_omni,
        actor_omni=actor_omni,
        service=service,
        device_key_hash=device_key_hash,
        k3_epoch=k3_epoch,
        issued_at=now,
        expires_at=now + lifetime,
        nonce=secrets.token_hex(16),
        aud=aud,
    )


@functools.lru_cache(maxsize=64)
def canonical_bytes(payload: CapPayload) -> bytes:
    """RFC 8785 canonical JSON bytes of the payload: what ``broker_sig`` signs.

    Remembered for the last few payloads: minting one cap needs them for the signature and
    again for the token, verifying one for the signature and the digest.
    """
    return rfc8785.dumps(payload.to_json_dict())


def cap_digest(payload: CapPayload) -> bytes:
    """sha256 of the canonical bytes: the cap's identity inside a worker PoP."""
    return hashlib.sha256(canonical_bytes(payload)).digest()


@dataclass(frozen=True)
class SignedCap:
    """A payload with its K1 ``kid`` and ``broker_sig`` (see the module docstring)."""

    payload: CapPayload
    kid: str
    broker_sig: str

    def to_wire(self) -> dict[str, str | dict[str, str | int]]:
        """The wire object ``{"payload", "kid", "broker_sig"}``."""
        return {
            "payload": self.payload.to_json_dict(),
            "kid": self.kid,
            "broker_sig": self.broker_sig,
        }

    def to_token(self) -> str:
        """The single-string token: base64url of the wire object's RFC 8785 bytes.

        Composed from the payload's canonical bytes when ``kid`` and ``broker_sig`` are
        URL-safe ASCII (always, for a signed or parsed cap), which RFC 8785 writes verbatim
        between quotes; the members sort as ``broker_sig``, ``kid``, ``payload``.
        """
        if _KID.fullmatch(self.kid) is None or _KID.fullmatch(self.broker_sig) is None:
            return b64url_encode(rfc8785.dumps(self.to_wire()))
        head = f'{{"broker_sig":"{self.broker_sig}","kid":"{self.kid}","payload":'
        return b64url_encode(head.encode("ascii") + canonical_bytes(self.payload) + b"}")

    @classmethod
    def from_wire(cls, obj: object) -> SignedCap:
        """Parse the wire object strictly.

        Raises:
            CapInvalid, CapLifetimeTooLong.
        """
        if not isinstance(obj, dict) or set(obj) != _WIRE_MEMBERS:
            raise CapInvalid("cap must have exactly the members payload, kid, broker_sig")
        kid, sig = obj["kid"], obj["broker_sig"]
        if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
            raise CapInvalid("cap kid must be 1..128 URL-safe characters")
        if not isinstance(sig, str) or len(sig) != 86:
            raise CapInvalid("broker_sig must be 64 bytes as unpadded base64url")
        return cls(payload=CapPayload.from_json_dict(obj["payload"]), kid=kid, broker_sig=sig)


def parse_cap_token(token: str) -> SignedCap:
    """Decode and strictly parse a cap token (no signature check: see :func:`verify_cap`).

    Raises:
        CapInvalid: too long, not base64url, not JSON, or not a valid wire object.
        CapLifetimeTooLong: see :class:`CapPayload`.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise CapInvalid(f"cap token must be a string of at most {MAX_TOKEN_CHARS} characters")
    try:
        obj = loads_object(b64url_decode(token), what="cap token")
    except InvalidEncoding:
        raise CapInvalid("cap token is not base64url of a JSON object") from None
    except StrictJsonError as exc:  # duplicate members, NaN, too deep, not an object
        raise CapInvalid(f"cap JSON: {exc.reason}") from None
    return SignedCap.from_wire(obj)


def sign_cap(payload: CapPayload, key: ec.EllipticCurvePrivateKey, kid: str) -> SignedCap:
    """Sign a payload with K1 (ES256, deterministic) under ``kid``.

    Raises:
        InvalidKeyMaterial: not a P-256 private key.
        CapInvalid: kid not 1..128 URL-safe characters.
    """
    if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
        raise CapInvalid("cap kid must be 1..128 URL-safe characters")
    signature = es256_sign(key, canonical_bytes(payload))
    return SignedCap(payload=payload, kid=kid, broker_sig=b64url_encode(signature))


@dataclass(frozen=True)
class VerifiedCap:
    """A cap whose signature, audience, operation and validity period have been checked.

    ``digest`` is :func:`cap_digest` of the payload, the value a worker PoP signs over.
    """

    payload: CapPayload
    kid: str
    digest: bytes


def verify_cap(
    token: str | SignedCap,
    *,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    expected_aud: str,
    now: float,
    expected_op: CapOp | str | None = None,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> VerifiedCap:
    """Verify a cap token (or an already parsed :class:`SignedCap`).

    Args:
        keys: trusted K1 public keys by kid (e.g. ``JsonWebKeySet.by_kid``).
        expected_aud: this worker's audience string.
        now: current Unix time in seconds.
        expected_op: the operation being performed; ``None`` skips that check.
        max_skew: seconds ``issued_at`` may lie ahead of ``now`` (clock skew).

    Raises:
        CapInvalid, CapLifetimeTooLong: malformed token (see :func:`parse_cap_token`).
        CapKeyUnknown: kid not in ``keys``.
        CapSignatureInvalid: broker_sig does not verify.
        CapAudienceMismatch: aud is not ``expected_aud``.
        CapOperationMismatch: op is not ``expected_op``.
        CapNotYetValid: issued_at > now + max_skew.
        CapExpired: now >= expires_at.
    """
    signed = token if isinstance(token, SignedCap) else parse_cap_token(token)
    payload = signed.payload
    public_key = keys.get(signed.kid)
    if public_key is None:
        raise CapKeyUnknown("cap kid is not a trusted cap-signing key")
    try:
        raw_signature = b64url_decode(signed.broker_sig)
        valid = es256_verify(public_key, canonical_bytes(payload), raw_signature)
    except (InvalidEncoding, SignatureMalformed):
        raise CapInvalid("broker_sig is not 64 bytes of unpadded base64url") from None
    if not valid:
        raise CapSignatureInvalid("broker_sig does not verify under the cap key")
    if not hmac.compare_digest(payload.aud.encode("ascii"), expected_aud.encode("utf-8")):
        raise CapAudienceMismatch("cap is for a different audience")
    if expected_op is not None and payload.op is not _coerce_op(expected_op):
        raise CapOperationMismatch(f"cap authorises {payload.op.value}, not {expected_op}")
    if payload.issued_at > now + max_skew:
        raise CapNotYetValid("cap issued_at lies in the future")
    if now >= payload.expires_at:
        raise CapExpired("cap has expired")
    return VerifiedCap(payload=payload, kid=signed.kid, digest=cap_digest(payload))
