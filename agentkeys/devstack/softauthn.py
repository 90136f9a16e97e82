"""A software WebAuthn authenticator (tests, and the CLI's ``--dev-authenticator``).

It behaves like a platform authenticator with one ES256 (P-256) credential: ``create`` answers
``navigator.credentials.create`` with "none" attestation, ``get`` answers
``navigator.credentials.get`` with an assertion (authenticatorData ‖ clientDataJSON, DER ECDSA
over authenticatorData ‖ sha256(clientDataJSON)). Keyword options of ``get`` produce the faulty
variants negative tests need (wrong rpId, flags, type, origin, sign count, another key).

It holds its private key in memory only; it is not a place to keep a real passkey.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_encode
from agentkeys.errors import InvalidKeyMaterial

__all__ = [
    "FLAG_AT",
    "FLAG_UP",
    "FLAG_UV",
    "SoftAssertion",
    "SoftAuthenticator",
    "SoftRegistration",
]

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40

_COSE_KTY_EC2 = 2
_COSE_ALG_ES256 = -7
_COSE_CRV_P256 = 1


def _client_data(kind: str, challenge: bytes, origin: str) -> bytes:
    return json.dumps(
        {
            "type": kind,
            "challenge": b64url_encode(challenge),
            "origin": origin,
            "crossOrigin": False,
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class SoftRegistration:
    """The answer to ``navigator.credentials.create`` ("none" attestation)."""

    credential_id: bytes
    public_point: bytes  # X ‖ Y, 64 bytes
    authenticator_data: bytes
    client_data_json: bytes
    attestation_object: bytes

    def to_json(self) -> dict[str, object]:
        """The RegistrationResponseJSON a browser would post (py_webauthn parses it)."""
        return {
            "id": b64url_encode(self.credential_id),
            "rawId": b64url_encode(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url_encode(self.client_data_json),
                "attestationObject": b64url_encode(self.attestation_object),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }


@dataclass(frozen=True)
class SoftAssertion:
    """The answer to ``navigator.credentials.get``; ``signature`` is DER ECDSA."""

    credential_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes

    def to_json(self) -> dict[str, object]:
        """The AuthenticationResponseJSON a browser would post (py_webauthn parses it)."""
        return {
            "id": b64url_encode(self.credential_id),
            "rawId": b64url_encode(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url_encode(self.client_data_json),
                "authenticatorData": b64url_encode(self.authenticator_data),
                "signature": b64url_encode(self.signature),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }


class SoftAuthenticator:
    """One software passkey for relying party ``rp_id``, used from web origin ``origin``.

    Args:
        rp_id: the relying party id whose sha256 goes into authenticatorData.
        origin: written into clientDataJSON.
        private_key: the credential key (a fresh P-256 key when omitted).
        counting: True: the sign count starts at 0 and increases by one per assertion, like a
            security key; False: it stays 0, like a synced passkey.

    Raises:
        InvalidKeyMaterial: ``private_key`` is not a P-256 key.
    """

    def __init__(
        self,
        *,
        rp_id: str,
        origin: str,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        counting: bool = True,
    ) -> None:
        key = private_key if private_key is not None else ec.generate_private_key(ec.SECP256R1())
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKeyMaterial("a WebAuthn ES256 credential needs a P-256 key")
        self._key = key
        self.rp_id = rp_id
        self.origin = origin
        self.counting = counting
        self.sign_count = 0
        self.credential_id = secrets.token_bytes(32)

    @property
    def rp_id_hash(self) -> bytes:
        """sha256(rp_id): the first 32 bytes of every authenticatorData."""
        return hashlib.sha256(self.rp_id.encode()).digest()

    @property
    def public_point(self) -> bytes:
        """The credential's public key as X ‖ Y (64 bytes)."""
        numbers = self._key.public_key().public_numbers()
        return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    def cose_key(self) -> bytes:
        """The credential public key as a COSE_Key (EC2, ES256, P-256)."""
        point = self.public_point
        return cbor2.dumps(
            {
                1: _COSE_KTY_EC2,
                3: _COSE_ALG_ES256,
                -1: _COSE_CRV_P256,
                -2: point[:32],
                -3: point[32:],
            }
        )

    def create(self, challenge: bytes) -> SoftRegistration:
        """Register the credential: authenticatorData with attested credential data, "none"."""
        auth_data = (
            self.rp_id_hash
            + bytes([FLAG_UP | FLAG_UV | FLAG_AT])
            + self.sign_count.to_bytes(4, "big")
            + bytes(16)  # AAGUID: none
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + self.cose_key()
        )
        client_data = _client_data("webauthn.create", challenge, self.origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return SoftRegistration(
            credential_id=self.credential_id,
            public_point=self.public_point,
            authenticator_data=auth_data,
            client_data_json=client_data,
            attestation_object=attestation,
        )

    def get(
        self,
        challenge: bytes,
        *,
        flags: int = FLAG_UP | FLAG_UV,
        sign_count: int | None = None,
        rp_id: str | None = None,
        kind: str = "webauthn.get",
        origin: str | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> SoftAssertion:
        """Assert over ``challenge``.

        Args:
            challenge: the raw challenge bytes (base64url-encoded into clientDataJSON).
            flags: authenticatorData flags (omit UP or UV for negative tests).
            sign_count: an explicit count; by default the next count (0 when not counting).
            rp_id: another relying party id (negative tests).
            kind: clientDataJSON ``type`` (negative tests: ``"webauthn.create"``).
            origin: another origin.
            signing_key: sign with another key (negative tests).
        """
        if sign_count is None:
            if self.counting:
                self.sign_count += 1
            sign_count = self.sign_count
        rp_hash = hashlib.sha256((rp_id if rp_id is not None else self.rp_id).encode()).digest()
        auth_data = rp_hash + bytes([flags]) + sign_count.to_bytes(4, "big")
        client_data = _client_data(kind, challenge, origin if origin is not None else self.origin)
        key = signing_key if signing_key is not None else self._key
        signature = key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return SoftAssertion(
            credential_id=self.credential_id,
            authenticator_data=auth_data,
            client_data_json=client_data,
            signature=signature,
        )

    async def get_assertion(self, challenge: bytes) -> SoftAssertion:
        """:meth:`get` with defaults, as the async passkey interface of agentkeys.chain."""
        return self.get(challenge)
