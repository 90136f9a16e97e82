"""Errors of the broker (SPEC.md section 7, broker; issue 6 denial reasons).

    AgentkeysError
    └── BrokerError
        ├── SessionError (401)            J0/J1 session problems
        │   ├── SessionMissing            no ``Authorization: Bearer`` session
        │   ├── SessionInvalid            malformed, wrong key, wrong audience or signature
        │   ├── SessionExpired            past ``exp``
        │   ├── SessionRevoked            revoked (or unknown to the state store)
        │   └── SessionStageMismatch (403) a J0 where a J1 is needed, or the reverse
        │       └── DeviceSessionNotAllowed  a device session outside what it may do
        ├── EmailLinkError (401)          the magic link
        │   ├── EmailTokenInvalid         unknown or already used token
        │   ├── EmailTokenExpired         older than 10 minutes
        │   └── EmailRequestUnknown (404) no such sign-in request (or already collected)
        ├── EmailDeliveryFailed (502)     the SMTP relay refused or is unreachable
        ├── EmailRateLimited (429)        too many pending sign-in links for one address
        ├── PasskeyError (401)            WebAuthn enrollment / assertion
        │   ├── ChallengeUnknown          no such (or used, or expired) challenge
        │   ├── PasskeyRegistrationRejected  py_webauthn refused the registration
        │   ├── PasskeyAssertionRejected  py_webauthn refused the assertion (origin, challenge…)
        │   ├── PasskeySignCountReplayed  sign count did not increase
        │   ├── PasskeyNotEnrolled (403)  the identity has no passkey
        │   ├── K10ProofRejected          the K10 signature over the enrollment challenge
        │   └── DeviceSignatureRejected   the K10 signature over a device sign-in challenge
        ├── DeviceChallengesPending (429) too many unexpired sign-in challenges for a device
        ├── CapDenied (403)               a cap mint refused (each leaf is one reason)
        │   ├── OperatorMismatch          operator_mismatch (session is another operator's)
        │   └── EpochMismatch             epoch_mismatch (the device asked for another epoch)
        ├── StalePop (401)                stale_pop (PoP timestamp outside the window)
        ├── ReplayedNonce (401)           replayed_nonce
        ├── PopRejected (401)             pop_rejected (key mismatch, bad signature, malformed)
        ├── ChainUnavailable (503)        chain_unavailable
        ├── OidcRefused (400)             oidc_refused (empty / non-hex tag value)
        ├── RelayDisabled (404)           relay_disabled
        ├── RelayRejected (403)           relay_rejected (K10 or K11 did not verify)
        ├── K4ApprovalRefused (403)       k4_approval_refused (the signer refused to sign)
        ├── SignerFailed (502)            signer_failed (the signer answered wrongly or 5xx)
        │   └── SignerUnavailable (503)   signer_unavailable (not reached: retry later)
        └── StoreError (500)              store_error (the state store failed)

The device-binding leaves a mint can also be refused with (``device_not_registered``,
``device_revoked``, ``binding_mismatch``, ``role_missing``, ``master_only``,
``actor_not_agent_of_operator``, ``service_not_in_scope``, ``read_only_scope``, all 403) are
the shared ones of ``agentkeys.errors`` (``BindingDenied``), re-exported here.

Reasons never carry tokens, keys or signatures.
"""

from __future__ import annotations

from typing import ClassVar

from agentkeys.errors import (
    ActorNotAgentOfOperator,
    AgentkeysError,
    BindingMismatch,
    DeviceNotRegistered,
    DeviceRevoked,
    MasterOnly,
    ReadOnlyScope,
    RoleMissing,
    ServiceNotInScope,
)

__all__ = [
    "ActorNotAgentOfOperator",
    "BindingMismatch",
    "BrokerError",
    "CapDenied",
    "ChainUnavailable",
    "ChallengeUnknown",
    "DeviceChallengesPending",
    "DeviceNotRegistered",
    "DeviceRevoked",
    "DeviceSessionNotAllowed",
    "DeviceSignatureRejected",
    "EmailDeliveryFailed",
    "EmailLinkError",
    "EmailRateLimited",
    "EmailRequestUnknown",
    "EmailTokenExpired",
    "EmailTokenInvalid",
    "EpochMismatch",
    "K4ApprovalRefused",
    "K10ProofRejected",
    "MasterOnly",
    "OidcRefused",
    "OperatorMismatch",
    "PasskeyApprovalRequired",
    "PasskeyAssertionRejected",
    "PasskeyAssertionRequired",
    "PasskeyError",
    "PasskeyNotChainMaster",
    "PasskeyNotEnrolled",
    "PasskeyRegistrationRejected",
    "PasskeySignCountReplayed",
    "PopRejected",
    "ReadOnlyScope",
    "RelayDisabled",
    "RelayRejected",
    "ReplayedNonce",
    "RoleMissing",
    "ServiceNotInScope",
    "SessionError",
    "SessionExpired",
    "SessionInvalid",
    "SessionMissing",
    "SessionRevoked",
    "SessionStageMismatch",
    "SignerFailed",
    "SignerUnavailable",
    "StalePop",
    "StoreError",
]


class BrokerError(AgentkeysError):
    """Base of the broker's errors."""

    error: ClassVar[str] = "broker_error"
    status: ClassVar[int] = 500


# --- sessions -----------------------------------------------------------------------------------


class SessionError(BrokerError):
    """Branch: the request's session is not acceptable."""

    error: ClassVar[str] = "session_error"
    status: ClassVar[int] = 401


class SessionMissing(SessionError):
    """No ``Authorization: Bearer <session>`` header."""

    error: ClassVar[str] = "session_missing"


class SessionInvalid(SessionError):
    """Malformed token, unknown kid, bad signature, wrong issuer or audience."""

    error: ClassVar[str] = "session_invalid"


class SessionExpired(SessionError):
    """The session is past its ``exp``."""

    error: ClassVar[str] = "session_expired"


class SessionRevoked(SessionError):
    """The session was revoked (or the state store does not know it)."""

    error: ClassVar[str] = "session_revoked"


class SessionStageMismatch(SessionError):
    """A J0 session where a J1 is required, or the reverse."""

    error: ClassVar[str] = "session_stage_mismatch"
    status: ClassVar[int] = 403


class DeviceSessionNotAllowed(SessionStageMismatch):
    """A device session (the sidecar's) on a route it may not use, or minting for another
    device, actor or operation than its own ``fetch``."""

    error: ClassVar[str] = "device_session_not_allowed"


# --- email magic link ---------------------------------------------------------------------------


class EmailLinkError(BrokerError):
    """Branch: the email magic link or its sign-in request."""

    error: ClassVar[str] = "email_link_error"
    status: ClassVar[int] = 401


class EmailTokenInvalid(EmailLinkError):
    """Unknown or already used link token."""

    error: ClassVar[str] = "email_token_invalid"


class EmailTokenExpired(EmailLinkError):
    """The link is older than its lifetime (10 minutes)."""

    error: ClassVar[str] = "email_token_expired"


class EmailRequestUnknown(EmailLinkError):
    """No such sign-in request, or its session was already collected."""

    error: ClassVar[str] = "email_request_unknown"
    status: ClassVar[int] = 404


class EmailDeliveryFailed(BrokerError):
    """The SMTP relay could not be reached or refused the message."""

    error: ClassVar[str] = "email_delivery_failed"
    status: ClassVar[int] = 502


class EmailRateLimited(BrokerError):
    """Too many unexpired sign-in requests for one address (no more mail is sent)."""

    error: ClassVar[str] = "email_rate_limited"
    status: ClassVar[int] = 429


# --- passkeys -----------------------------------------------------------------------------------


class PasskeyError(BrokerError):
    """Branch: WebAuthn enrollment or assertion."""

    error: ClassVar[str] = "passkey_error"
    status: ClassVar[int] = 401


class ChallengeUnknown(PasskeyError):
    """No such challenge for this session (never issued, already used or expired)."""

    error: ClassVar[str] = "challenge_unknown"


class PasskeyRegistrationRejected(PasskeyError):
    """The registration response does not verify (origin, challenge, rpId, flags, format)."""

    error: ClassVar[str] = "passkey_registration_rejected"


class PasskeyAssertionRejected(PasskeyError):
    """The assertion does not verify (origin, challenge, rpId, flags, signature)."""

    error: ClassVar[str] = "passkey_assertion_rejected"


class PasskeySignCountReplayed(PasskeyError):
    """The authenticator's sign count did not increase: a cloned or replayed assertion."""

    error: ClassVar[str] = "passkey_sign_count_replayed"


class PasskeyNotEnrolled(PasskeyError):
    """The identity has no enrolled passkey (or not this credential)."""

    error: ClassVar[str] = "passkey_not_enrolled"
    status: ClassVar[int] = 403


class PasskeyApprovalRequired(PasskeyError):
    """The identity already has a passkey: a new one needs that passkey's approval, and the
    approval given is missing or not by one of them."""

    error: ClassVar[str] = "passkey_approval_required"
    status: ClassVar[int] = 403


class PasskeyAssertionRequired(PasskeyError):
    """The request needs a fresh passkey assertion (the operator has a master on chain)."""

    error: ClassVar[str] = "passkey_assertion_required"
    status: ClassVar[int] = 401


class PasskeyNotChainMaster(PasskeyError):
    """The operator has a master on chain, and this passkey is not the one registered there
    for a live master device of that operator."""

    error: ClassVar[str] = "passkey_not_chain_master"
    status: ClassVar[int] = 403


class K10ProofRejected(PasskeyError):
    """The K10 signature over the enrollment challenge does not verify."""

    error: ClassVar[str] = "k10_proof_rejected"


class DeviceSignatureRejected(PasskeyError):
    """The K10 signature over a device sign-in challenge does not verify with the device's
    registered K10 key (``agentkeys.device_signin``)."""

    error: ClassVar[str] = "device_signature_rejected"


class DeviceChallengesPending(BrokerError):
    """The device already has as many unexpired sign-in challenges as allowed."""

    error: ClassVar[str] = "device_challenges_pending"
    status: ClassVar[int] = 429


# --- cap minting --------------------------------------------------------------------------------


class CapDenied(BrokerError):
    """Branch: a cap mint refused after the chain checks (SPEC section 5)."""

    error: ClassVar[str] = "cap_denied"
    status: ClassVar[int] = 403


class OperatorMismatch(CapDenied):
    """The session's subject is not the request's operator_omni."""

    error: ClassVar[str] = "operator_mismatch"


class EpochMismatch(CapDenied):
    """The request names a K3 epoch other than the chain's current one."""

    error: ClassVar[str] = "epoch_mismatch"


class StalePop(BrokerError):
    """The PoP timestamp is outside the freshness window."""

    error: ClassVar[str] = "stale_pop"
    status: ClassVar[int] = 401


class ReplayedNonce(BrokerError):
    """The PoP nonce was already used within its window."""

    error: ClassVar[str] = "replayed_nonce"
    status: ClassVar[int] = 401


class PopRejected(BrokerError):
    """The PoP is malformed, names another key, or its signature does not verify."""

    error: ClassVar[str] = "pop_rejected"
    status: ClassVar[int] = 401


class ChainUnavailable(BrokerError):
    """The chain could not be read: fail closed."""

    error: ClassVar[str] = "chain_unavailable"
    status: ClassVar[int] = 503


# --- OIDC, relay, store -------------------------------------------------------------------------


class OidcRefused(BrokerError):
    """A token would carry an empty or non-canonical tag value."""

    error: ClassVar[str] = "oidc_refused"
    status: ClassVar[int] = 400


class RelayDisabled(BrokerError):
    """Hosted-relay mode is not configured on this broker."""

    error: ClassVar[str] = "relay_disabled"
    status: ClassVar[int] = 404


class RelayRejected(BrokerError):
    """The mutation's K10 signature or K11 assertion did not verify at the broker."""

    error: ClassVar[str] = "relay_rejected"
    status: ClassVar[int] = 403


class K4ApprovalRefused(BrokerError):
    """The signer refused K4's first-master approval (its error code is in the reason)."""

    error: ClassVar[str] = "k4_approval_refused"
    status: ClassVar[int] = 403


class SignerFailed(BrokerError):
    """The signer answered, but wrongly: a 5xx, a malformed answer, or another approval."""

    error: ClassVar[str] = "signer_failed"
    status: ClassVar[int] = 502


class SignerUnavailable(SignerFailed):
    """The signer was not reached (connection refused or reset, timeout): retry later."""

    error: ClassVar[str] = "signer_unavailable"
    status: ClassVar[int] = 503


class StoreError(BrokerError):
    """The state store failed."""

    error: ClassVar[str] = "store_error"
    status: ClassVar[int] = 500
