"""The root of agentkeys' exception tree, and the leaves of the core formats.

    AgentkeysError                       every error agentkeys raises on purpose
    ├── KeyDerivationExhausted (500)     K4 derivation found no valid scalar (never expected)
    ├── FormatError (400)                input that fails a core format's checks
    │   ├── InvalidIdentifier            not a 32-byte hex identifier / wallet / identity value
    │   ├── InvalidServiceName           service name outside ^[a-z0-9][a-z0-9._-]{0,63}$
    │   ├── InvalidAgentLabel            agent label outside ^[a-z0-9-]{1,32}$
    │   ├── InvalidEncoding              bad base64url, hex or JSON text
    │   ├── InvalidEpoch                 K3 epoch not an integer in 0..2^32-1
    │   ├── InvalidKeyMaterial           wrong key type, curve or length; malformed JWK / JWKS
    │   ├── SignatureMalformed           a signature of the wrong length or form
    │   ├── SignatureInvalid             a well-formed signature that does not recover / verify
    │   ├── UnsafeTagValue               a session-tag value that is not canonical (never minted)
    │   ├── EnvelopeError                credential envelopes (SPEC section 4)
    │   │   ├── EnvelopeTruncated        shorter than its version's minimum
    │   │   ├── EnvelopeVersionUnknown   version byte not 0x01, 0x02 or 0x04
    │   │   ├── EnvelopeContextMissing   wallet / actor_omni for the AAD not given
    │   │   └── EnvelopeTampered         GCM authentication failed (wrong key, AAD or data)
    │   ├── CapError (401)               capability tokens (SPEC section 5)
    │   │   ├── CapInvalid (400)         malformed token or payload
    │   │   ├── CapKeyUnknown            kid not in the trusted key set
    │   │   ├── CapSignatureInvalid      broker_sig does not verify
    │   │   ├── CapLifetimeTooLong       expires_at - issued_at above the maximum (1800 s)
    │   │   ├── CapNotYetValid           issued_at in the future beyond the allowed skew
    │   │   ├── CapExpired               now at or past expires_at
    │   │   ├── CapAudienceMismatch      aud is not this worker's audience (403)
    │   │   └── CapOperationMismatch     op is not the operation being performed (403)
    │   └── PopError (401)               K10 proof of possession (SPEC section 5)
    │       ├── PopInvalid (400)         malformed claims or signature encoding
    │       ├── PopKeyMismatch           the K10 key does not hash to the claimed device_key_hash
    │       ├── PopSignatureInvalid      the K10 signature does not verify over the message
    │       ├── PopStale                 timestamp older than the freshness window
    │       │   └── PopTimestampInFuture timestamp ahead of now beyond the allowed skew
    │       ├── PopNonceReused           nonce already seen within the window
    │       └── PopNonceRegistryFull (503) registry full of live nonces: fail closed
    ├── BindingDenied (403)              a device-binding rule refused (agentkeys.binding)
    │   ├── DeviceNotRegistered          the device_key_hash is not in SidecarRegistry
    │   ├── DeviceRevoked                the device is revoked
    │   ├── BindingMismatch              bound to another operator_omni or actor_omni
    │   ├── RoleMissing                  the device lacks CAP_MINT
    │   ├── MasterOnly                   store / teardown / list by an agent device
    │   ├── ActorNotAgentOfOperator      the actor is not an agent of this operator on chain
    │   ├── ServiceNotInScope            the service is not in the actor's scope entry
    │   └── ReadOnlyScope                a write on a read-only scope
    └── (each subpackage)                its own errors.py, leaves subclass AgentkeysError

    attest.errors.AttestError            attest's own root (attest imports nothing of
                                         agentkeys); :data:`DOMAIN_ERRORS` catches both

Every leaf answers the caller's question: it carries a machine-readable
``error`` code, the HTTP ``status`` a service answers with, and a ``reason``
for humans. A reason never contains secret material (keys, plaintexts,
tokens): it is logged and shown to callers.

Statuses are what a service answers by default; a service may translate (for
example the worker answers a stored envelope that fails to open as its own
server-side error, since the client did not send it).
"""

from __future__ import annotations

from typing import ClassVar, Final

from attest.errors import AttestError


class AgentkeysError(Exception):
    """Base of every error agentkeys raises deliberately.

    Subclasses set ``error`` (stable snake_case code) and ``status`` (HTTP).
    """

    error: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        """The ``{error, reason}`` body every endpoint answers a failure with."""
        return {"error": self.error, "reason": self.reason}


DomainError = AgentkeysError | AttestError
"""An error raised on purpose, by agentkeys or by the attest package it builds on: both carry
``error``, ``status``, ``reason`` and ``to_json()``."""

DOMAIN_ERRORS: Final = (AgentkeysError, AttestError)
""":data:`DomainError` as a tuple, for ``except DOMAIN_ERRORS`` and ``isinstance``: every site
that answers, reports or retries a refusal whose cause may lie in attest (a device key, a
sealed secret, an unattested caller) catches this, never ``AgentkeysError`` alone."""


class KeyDerivationExhausted(AgentkeysError):
    """K4 derivation produced no valid secp256k1 scalar in 16 attempts (probability ~2^-2000)."""

    error = "key_derivation_exhausted"
    status = 500


# --- core formats -----------------------------------------------------------------------------


class FormatError(AgentkeysError):
    """Input that fails one of the core formats' checks (identifiers, envelopes, caps, PoP)."""

    error = "format_error"
    status = 400


class InvalidIdentifier(FormatError):
    """Not a valid 32-byte identifier, wallet address or identity value (SPEC section 3)."""

    error = "invalid_identifier"


class InvalidServiceName(FormatError):
    """Service name outside ``^[a-z0-9][a-z0-9._-]{0,63}$`` after lowercasing (SPEC section 3)."""

    error = "invalid_service_name"


class InvalidAgentLabel(FormatError):
    """Agent label outside ``^[a-z0-9-]{1,32}$`` (SPEC section 3)."""

    error = "invalid_agent_label"


class InvalidEncoding(FormatError):
    """Text that is not valid strict base64url, hex or JSON where one of those is required."""

    error = "invalid_encoding"


class InvalidEpoch(FormatError):
    """A K3 epoch that is not an integer in 0..2^32-1 (the u32 of the 0x04 header)."""

    error = "invalid_epoch"


class InvalidKeyMaterial(FormatError):
    """A key of the wrong type, curve or length, or a malformed JWK / JWKS."""

    error = "invalid_key_material"


class SignatureMalformed(FormatError):
    """A signature of the wrong length or form (e.g. sig65 with v outside {0, 1})."""

    error = "signature_malformed"


class SignatureInvalid(FormatError):
    """A well-formed signature that does not recover to a key or does not verify."""

    error = "signature_invalid"


class UnsafeTagValue(FormatError):
    """A session-tag value is not canonical hex (never substitute it into a policy)."""

    error = "unsafe_tag_value"


# --- envelopes (SPEC section 4) ---------------------------------------------------------------


class EnvelopeError(FormatError):
    """Branch: a credential envelope could not be opened."""

    error = "envelope_error"


class EnvelopeTruncated(EnvelopeError):
    """Shorter than the minimum for its version (29 bytes for 0x01/0x02, 33 for 0x04)."""

    error = "envelope_truncated"


class EnvelopeVersionUnknown(EnvelopeError):
    """The version byte is not 0x01, 0x02 or 0x04."""

    error = "envelope_version_unknown"


class EnvelopeContextMissing(EnvelopeError):
    """The caller did not supply the wallet / actor_omni this version's AAD is built from."""

    error = "envelope_context_missing"


class EnvelopeTampered(EnvelopeError):
    """AES-GCM authentication failed: wrong KEK, wrong AAD (wallet, actor, service, header) or
    modified bytes. GCM cannot tell these apart, so neither can we."""

    error = "envelope_tampered"


# --- capability tokens (SPEC section 5) -------------------------------------------------------


class CapError(FormatError):
    """Branch: a capability token was refused."""

    error = "cap_error"
    status = 401


class CapInvalid(CapError):
    """Malformed token, wire object or payload (types, fields, canonical form)."""

    error = "cap_invalid"
    status = 400


class CapKeyUnknown(CapError):
    """The token's ``kid`` is not in the trusted cap key set."""

    error = "cap_key_unknown"


class CapSignatureInvalid(CapError):
    """``broker_sig`` does not verify over the canonical payload bytes."""

    error = "cap_signature_invalid"


class CapLifetimeTooLong(CapError):
    """``expires_at - issued_at`` exceeds the maximum cap lifetime (1800 s)."""

    error = "cap_lifetime_too_long"


class CapNotYetValid(CapError):
    """``issued_at`` lies in the future by more than the allowed clock skew."""

    error = "cap_not_yet_valid"


class CapExpired(CapError):
    """``now`` is at or past ``expires_at``."""

    error = "cap_expired"


class CapAudienceMismatch(CapError):
    """``aud`` names a different worker."""

    error = "cap_audience_mismatch"
    status = 403


class CapOperationMismatch(CapError):
    """``op`` is not the operation being performed."""

    error = "cap_operation_mismatch"
    status = 403


# --- K10 proof of possession (SPEC section 5) -------------------------------------------------


class PopError(FormatError):
    """Branch: a K10 proof of possession was refused."""

    error = "pop_error"
    status = 401


class PopInvalid(PopError):
    """Malformed PoP claims or signature encoding."""

    error = "pop_invalid"
    status = 400


class PopKeyMismatch(PopError):
    """The K10 public key does not hash to the claimed ``device_key_hash``."""

    error = "pop_key_mismatch"


class PopSignatureInvalid(PopError):
    """The K10 signature does not verify over the rebuilt PoP message."""

    error = "pop_signature_invalid"


class PopStale(PopError):
    """The PoP timestamp is older than the freshness window."""

    error = "pop_stale"


class PopTimestampInFuture(PopStale):
    """The PoP timestamp is ahead of ``now`` by more than the allowed skew."""

    error = "pop_timestamp_in_future"


class PopNonceReused(PopError):
    """The PoP nonce was already used within its freshness window."""

    error = "pop_nonce_reused"


class PopNonceRegistryFull(PopError):
    """The nonce registry is full of unexpired nonces; new requests are refused (fail closed)."""

    error = "pop_nonce_registry_full"
    status = 503


# --- device binding (SPEC section 5; agentkeys.binding) ---------------------------------------


class BindingDenied(AgentkeysError):
    """Branch: a device-binding rule refused a cap (at the broker's mint or the worker)."""

    error = "binding_denied"
    status = 403


class DeviceNotRegistered(BindingDenied):
    """The device_key_hash is not in SidecarRegistry."""

    error = "device_not_registered"


class DeviceRevoked(BindingDenied):
    """The device is registered but revoked."""

    error = "device_revoked"


class BindingMismatch(BindingDenied):
    """The device is bound to another operator_omni or actor_omni than the cap's."""

    error = "binding_mismatch"


class RoleMissing(BindingDenied):
    """The device lacks the CAP_MINT role."""

    error = "role_missing"


class MasterOnly(BindingDenied):
    """store, teardown and list are for a master device."""

    error = "master_only"


class ActorNotAgentOfOperator(BindingDenied):
    """actor != operator and the chain does not record the actor as an agent of the operator."""

    error = "actor_not_agent_of_operator"


class ServiceNotInScope(BindingDenied):
    """The service is not in the actor's scope entry (or there is no entry)."""

    error = "service_not_in_scope"


class ReadOnlyScope(BindingDenied):
    """A write operation on a read-only scope."""

    error = "read_only_scope"
