"""Errors of the signer (SPEC.md section 7, signer).

AgentkeysError
└── SignerError                      500 signer_error
    ├── EpochError                   409 epoch_error
    │   ├── EpochNotCurrent          409 epoch_not_current   (encrypt with a past epoch)
    │   ├── EpochInFuture            409 epoch_in_future     (beyond the chain's epoch)
    │   ├── EpochUnknown             409 epoch_unknown       (no K3 held for that epoch)
    │   └── EpochUnavailable         503 epoch_unavailable   (chain not read yet)
    ├── WalletMismatch               403 wallet_mismatch     (v1: wallet is not K4(identity))
    ├── KekRequestInvalid            400 kek_request_invalid (fields of the other version)
    ├── SiweMessageRejected          400 siwe_message_rejected
    ├── K10SignatureRejected         400 k10_signature_rejected
    ├── K11AssertionRejected         400 k11_assertion_rejected
    ├── K11AssertionReplayed         409 k11_assertion_replayed (K4 first-master approval)
    ├── FirstMasterRequestInvalid    400 first_master_request_invalid (device fields)
    ├── OperatorAlreadyRegistered    409 operator_already_registered
    ├── RegistryUnavailable          503 registry_unavailable (chain not readable / not wired)
    ├── StsExchangeFailed            502 sts_exchange_failed
    └── KeyStoreError                500 key_store_error     (sealed state unusable)

``UnsafeTagValue`` (400 ``unsafe_tag_value``: never mint a wildcard session tag) is the
shared leaf of ``agentkeys.errors`` raised by ``agentkeys.web_identity``, re-exported here.
"""

from __future__ import annotations

from typing import ClassVar

from agentkeys.errors import AgentkeysError, UnsafeTagValue

__all__ = [
    "EpochError",
    "EpochInFuture",
    "EpochNotCurrent",
    "EpochUnavailable",
    "EpochUnknown",
    "FirstMasterRequestInvalid",
    "K10SignatureRejected",
    "K11AssertionRejected",
    "K11AssertionReplayed",
    "KekRequestInvalid",
    "KeyStoreError",
    "OperatorAlreadyRegistered",
    "RegistryUnavailable",
    "SignerError",
    "SiweMessageRejected",
    "SiwePinUnset",
    "StsExchangeFailed",
    "UnsafeTagValue",
    "WalletMismatch",
]


class SignerError(AgentkeysError):
    """Base of the signer's errors."""

    error: ClassVar[str] = "signer_error"


class EpochError(SignerError):
    """The requested K3 epoch cannot be used for this purpose."""

    error: ClassVar[str] = "epoch_error"
    status: ClassVar[int] = 409


class EpochNotCurrent(EpochError):
    """Encryption must use the chain's current epoch."""

    error: ClassVar[str] = "epoch_not_current"


class EpochInFuture(EpochError):
    """The epoch is ahead of the chain's current epoch."""

    error: ClassVar[str] = "epoch_in_future"


class EpochUnknown(EpochError):
    """The signer holds no K3 for that (past) epoch."""

    error: ClassVar[str] = "epoch_unknown"


class EpochUnavailable(EpochError):
    """The signer has not read the chain's epoch yet or cannot reach the chain."""

    error: ClassVar[str] = "epoch_unavailable"
    status: ClassVar[int] = 503


class WalletMismatch(SignerError):
    """A v1 request names a wallet that is not the identity's K4 wallet."""

    error: ClassVar[str] = "wallet_mismatch"
    status: ClassVar[int] = 403


class KekRequestInvalid(SignerError):
    """A KEK request mixes or lacks the fields of its version."""

    error: ClassVar[str] = "kek_request_invalid"
    status: ClassVar[int] = 400


class SiwePinUnset(SignerError):
    """The signer was started without the relying party K4 SIWE messages must name."""

    error: ClassVar[str] = "siwe_pin_unset"
    status: ClassVar[int] = 503


class SiweMessageRejected(SignerError):
    """The message is not an EIP-4361 message for the identity's K4 wallet."""

    error: ClassVar[str] = "siwe_message_rejected"
    status: ClassVar[int] = 400


class K10SignatureRejected(SignerError):
    """The K10 signature does not verify (or is malformed)."""

    error: ClassVar[str] = "k10_signature_rejected"
    status: ClassVar[int] = 400


class K11AssertionRejected(SignerError):
    """The WebAuthn assertion does not verify against the expectations."""

    error: ClassVar[str] = "k11_assertion_rejected"
    status: ClassVar[int] = 400


class FirstMasterRequestInvalid(SignerError):
    """A device field of a first-master approval request is malformed."""

    error: ClassVar[str] = "first_master_request_invalid"
    status: ClassVar[int] = 400


class K11AssertionReplayed(SignerError):
    """This very assertion already approved a K4 signature (an assertion is single-use)."""

    error: ClassVar[str] = "k11_assertion_replayed"
    status: ClassVar[int] = 409


class OperatorAlreadyRegistered(SignerError):
    """The K4 wallet's operator already has a master wallet on chain: K4 signs no more."""

    error: ClassVar[str] = "operator_already_registered"
    status: ClassVar[int] = 409


class RegistryUnavailable(SignerError):
    """The SidecarRegistry cannot be read (or the signer was started without it)."""

    error: ClassVar[str] = "registry_unavailable"
    status: ClassVar[int] = 503


class StsExchangeFailed(SignerError):
    """The STS endpoint refused or did not answer the web-identity exchange."""

    error: ClassVar[str] = "sts_exchange_failed"
    status: ClassVar[int] = 502


class KeyStoreError(SignerError):
    """The sealed key state is missing, corrupt or cannot be unsealed."""

    error: ClassVar[str] = "key_store_error"
