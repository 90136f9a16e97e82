"""K4's one chain signature: the relay-mode first-master approval (SPEC.md sections 2, 6).

An operator who signed up by email has the signer-held K4 as its master wallet. The only
chain-related thing K4 ever signs is the SidecarRegistry's EIP-712
``RegisterFirstMaster(bytes32 operatorOmni, bytes32 challenge)`` (docs/contracts.md,
"First-master registration"), and only after the signer itself has checked, against the
challenge it rebuilds from the chain (chain id, registry address, the operator's nonce, the
K4 wallet and the new device):

1. the operator (actor_omni of the K4 wallet) has no master wallet on chain yet;
2. the new device's K10 signed that challenge (ES256, digest ``sha256(challenge)``);
3. the new device's passkey (K11) signed that challenge: the credential id hashes to the
   device's ``k11CredentialIdHash``, the authenticator data carries the device's rpIdHash
   and the user-present and user-verified flags, clientDataJSON is a ``webauthn.get`` over
   exactly the challenge, and the P-256 signature verifies with the device's K11 key;
4. that assertion was not used before (single use: see :class:`AssertionLedger`).

The challenge binds the wallet, chain, registry, nonce and every field of the device, so an
approval cannot be moved to another operator, device, chain or registry, and it is void once
the operator is registered. Master mutations never need K4: the contracts authorise them by
K10 + K11 of a registered master and anyone (the broker's relay) may submit them.

The pure checks live here; the route in :mod:`agentkeys.signer._service` reads the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.chain import challenge as ch
from agentkeys.errors import AgentkeysError
from agentkeys.omni import p256_public_key_from_point
from agentkeys.signer.errors import (
    FirstMasterRequestInvalid,
    K10SignatureRejected,
    K11AssertionRejected,
    K11AssertionReplayed,
    SignerError,
)
from attest.k10_signature import verify_k10

__all__ = [
    "AssertionLedger",
    "FirstMasterRequestDevice",
    "VerifiedAssertion",
    "first_master_challenge",
    "sign_register_first_master",
    "verify_first_master_k10",
    "verify_first_master_k11",
]

_FLAG_UP = 0x01
_FLAG_UV = 0x04


@dataclass(frozen=True)
class FirstMasterRequestDevice:
    """The ``device`` object of ``/k4/register-first-master`` (SidecarRegistry.NewMaster).

    Hex fields (no ``0x`` needed): ``k10_public_key`` and ``k11_public_key`` are 64-byte
    X ‖ Y, the others 32 bytes.
    """

    k10_public_key: str
    k11_credential_id_hash: str
    k11_public_key: str
    rp_id_hash: str
    roles: int
    attestation_digest: str = "00" * 32

    def to_new_master(self) -> ch.NewMaster:
        """The registry struct.

        Raises:
            FirstMasterRequestInvalid: a field is not hex of its size, a key is not on P-256,
                or the roles are out of range.
        """
        if isinstance(self.roles, bool) or not 1 <= self.roles <= 7:
            raise FirstMasterRequestInvalid("roles must be a non-empty subset of 7")
        device = ch.NewMaster(
            k10_point=_hex(self.k10_public_key, 64, "k10_public_key"),
            k11_credential_id_hash=_hex(self.k11_credential_id_hash, 32, "k11_credential_id_hash"),
            k11_point=_hex(self.k11_public_key, 64, "k11_public_key"),
            rp_id_hash=_hex(self.rp_id_hash, 32, "rp_id_hash"),
            roles=self.roles,
            attestation_digest=_hex(self.attestation_digest, 32, "attestation_digest"),
        )
        for point in (device.k10_point, device.k11_point):
            try:
                p256_public_key_from_point(point)
            except AgentkeysError as exc:
                raise FirstMasterRequestInvalid("a device key is not a P-256 point") from exc
        return device


def _hex(
    text: str, size: int, what: str, error: type[SignerError] = FirstMasterRequestInvalid
) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise error(f"{what} is not hex") from None
    if len(raw) != size:
        raise error(f"{what} must be {size} bytes")
    return raw


def first_master_challenge(
    *,
    chain_id: int,
    registry: str,
    operator_omni: bytes,
    nonce: int,
    wallet: str,
    device: ch.NewMaster,
) -> bytes:
    """The registration challenge the registry rebuilds for ``wallet`` and ``device``."""
    return ch.master_challenge(
        op_tag=ch.OP_REGISTER_FIRST_MASTER,
        chain_id=chain_id,
        target=to_checksum_address(registry),
        operator_omni=operator_omni,
        nonce=nonce,
        params_hash=ch.first_master_params(to_checksum_address(wallet), device),
    )


def verify_first_master_k10(device: ch.NewMaster, challenge: bytes, signature: str) -> None:
    """Check the new K10's ES256 signature ``r ‖ s`` (hex) over the 32 challenge bytes.

    Raises:
        K10SignatureRejected: malformed or not verifying.
    """
    rs = _hex(signature, 64, "k10_signature", K10SignatureRejected)
    try:
        key = p256_public_key_from_point(device.k10_point)
    except AgentkeysError:
        raise K10SignatureRejected("the device's K10 key is not a P-256 point") from None
    if not verify_k10(key, rs, message=challenge):
        raise K10SignatureRejected("the K10 signature does not verify over the challenge")


@dataclass(frozen=True)
class VerifiedAssertion:
    """A K11 assertion that verified; ``replay_key`` identifies this very signature."""

    replay_key: bytes
    sign_count: int


def _field(response: Mapping[str, object], name: str) -> bytes:
    value = response.get(name)
    if not isinstance(value, str):
        raise K11AssertionRejected(f"assertion response lacks {name}")
    try:
        return b64url_decode(value)
    except AgentkeysError:
        raise K11AssertionRejected(f"assertion {name} is not base64url") from None


def verify_first_master_k11(
    assertion: Mapping[str, object], *, device: ch.NewMaster, challenge: bytes
) -> VerifiedAssertion:
    """Check a WebAuthn assertion (AuthenticationResponseJSON) by the new device's passkey.

    The expectations are the registry's (rpIdHash, UP + UV, ``webauthn.get``, the challenge,
    the P-256 signature) plus the credential id's hash; the origin is not known to the signer
    (the broker checks it) and not checked on chain either.

    Raises:
        K11AssertionRejected: malformed, another credential or relying party, missing flags,
            another challenge or type, or a signature that does not verify.
    """
    raw_id_text = assertion.get("rawId", assertion.get("id"))
    response = assertion.get("response")
    if not isinstance(raw_id_text, str) or not isinstance(response, Mapping):
        raise K11AssertionRejected("assertion lacks rawId or response")
    try:
        raw_id = b64url_decode(raw_id_text)
    except AgentkeysError:
        raise K11AssertionRejected("assertion rawId is not base64url") from None
    auth_data = _field(response, "authenticatorData")
    client_data = _field(response, "clientDataJSON")
    signature = _field(response, "signature")
    if not hmac.compare_digest(hashlib.sha256(raw_id).digest(), device.k11_credential_id_hash):
        raise K11AssertionRejected("the assertion is by another credential than the device's")
    if len(auth_data) < 37:
        raise K11AssertionRejected("authenticator data is too short")
    if not hmac.compare_digest(auth_data[:32], device.rp_id_hash):
        raise K11AssertionRejected("the assertion is for another relying party")
    flags = auth_data[32]
    if not flags & _FLAG_UP or not flags & _FLAG_UV:
        raise K11AssertionRejected("the assertion lacks user presence or verification")
    try:
        client = json.loads(client_data)
    except (ValueError, UnicodeDecodeError):
        raise K11AssertionRejected("clientDataJSON is not JSON") from None
    if not isinstance(client, dict) or client.get("type") != "webauthn.get":
        raise K11AssertionRejected("clientDataJSON is not a webauthn.get")
    presented = client.get("challenge")
    if not isinstance(presented, str) or not hmac.compare_digest(
        presented.encode(), b64url_encode(challenge).encode()
    ):
        raise K11AssertionRejected("the assertion is over another challenge")
    try:
        r, _s = decode_dss_signature(signature)
        key = p256_public_key_from_point(device.k11_point)
        key.verify(
            signature,
            auth_data + hashlib.sha256(client_data).digest(),
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError, AgentkeysError):
        raise K11AssertionRejected("the passkey signature does not verify") from None
    return VerifiedAssertion(
        replay_key=hashlib.sha256(r.to_bytes(32, "big") + device.k11_point).digest(),
        sign_count=int.from_bytes(auth_data[33:37], "big"),
    )


class AssertionLedger:
    """Assertions that already approved a K4 signature (bounded, oldest forgotten first).

    An ECDSA signature's ``r`` is unique per signing (fresh nonce), so the ledger keys on
    ``sha256(r ‖ K11 point)``; ``s`` is left out so that the malleated ``(r, n − s)`` is the
    same entry. Forgetting is safe: once the registration is on chain the operator is
    registered and the signer refuses it on that ground.

    Args:
        capacity: most entries kept.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def consume(self, key: bytes) -> None:
        """Record ``key``.

        Raises:
            K11AssertionReplayed: it was recorded before.
        """
        if key in self._seen:
            raise K11AssertionReplayed("this passkey assertion was already used")
        self._seen[key] = None
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


def sign_register_first_master(
    private_key: bytes, *, chain_id: int, registry: str, operator_omni: bytes, challenge: bytes
) -> bytes:
    """The EIP-712 ``RegisterFirstMaster`` signature (65 bytes ``r ‖ s ‖ v``, v ∈ {27, 28}).

    Domain ``{name: "agentkeys.SidecarRegistry", version: "1", chainId, verifyingContract}``.
    """
    typed = ch.register_first_master_typed_data(
        chain_id=chain_id,
        registry=to_checksum_address(registry),
        operator_omni=operator_omni,
        challenge=challenge,
    )
    signed = Account.sign_message(encode_typed_data(full_message=typed), private_key=private_key)
    return bytes(signed.signature)
