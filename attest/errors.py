"""The exception tree of the ``attest`` package: its own root, so attest needs nothing else.

    AttestError                      anything attest refuses or cannot do
    ├── CallerUnidentified  (403)    the peer of a connection could not be attested (E1/E2)
    │   ├── CallerGone               the peer process exited or its pid was reused
    │   └── CallerNotLocal           E2: not loopback, or not in this network namespace
    ├── AttestationRefused  (403)    a quote, certification or E3 pin answer is refused
    │   ├── NonceMismatch            it answers another challenge
    │   ├── PcrMismatch              the quoted PCR state differs from the expected one
    │   ├── SignatureInvalid         not signed by the expected key
    │   └── KeyNotTrusted            the signing key lacks the required TPM attributes,
    │                                or the pin/bundle names no such key
    ├── AttestationMalformed (400)   a TPM structure, pin or bundle does not parse
    ├── InsecurePath        (500)    a key/socket path is a symlink, wider than 0600/0700,
    │                                or owned by someone else
    ├── DeviceKeyError      (500)    a device key (K10) cannot be created, loaded or used
    ├── TpmUnavailable      (503)    no TPM reachable through the configured TCTI
    ├── TpmError            (500)    the TPM refused an operation
    └── UnsealFailed        (500)    a sealed secret cannot be recovered here

Every class carries what agentkeys' own errors carry (``agentkeys.errors.AgentkeysError``):
a machine-readable ``error`` code, the HTTP ``status`` a service answers with, a ``reason``
for humans and :meth:`AttestError.to_json`; ``agentkeys.errors.DOMAIN_ERRORS`` catches both
trees. Reasons never contain key material or sealed secrets.
"""

from __future__ import annotations

from typing import ClassVar


class AttestError(Exception):
    """Base of every error attest raises deliberately."""

    error: ClassVar[str] = "attest_error"
    status: ClassVar[int] = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        """The ``{error, reason}`` body an endpoint answers this failure with."""
        return {"error": self.error, "reason": self.reason}


class CallerUnidentified(AttestError):
    error = "caller_unidentified"
    status = 403


class CallerGone(CallerUnidentified):
    error = "caller_gone"


class CallerNotLocal(CallerUnidentified):
    error = "caller_not_local"


class AttestationRefused(AttestError):
    error = "attestation_refused"
    status = 403


class NonceMismatch(AttestationRefused):
    error = "attestation_nonce_mismatch"


class PcrMismatch(AttestationRefused):
    error = "attestation_pcr_mismatch"


class SignatureInvalid(AttestationRefused):
    error = "attestation_signature_invalid"


class KeyNotTrusted(AttestationRefused):
    error = "attestation_key_not_trusted"


class AttestationMalformed(AttestError):
    error = "attestation_malformed"
    status = 400


class InsecurePath(AttestError):
    error = "insecure_path"
    status = 500


class DeviceKeyError(AttestError):
    error = "device_key_error"
    status = 500


class TpmUnavailable(AttestError):
    error = "tpm_unavailable"
    status = 503


class TpmError(AttestError):
    error = "tpm_error"
    status = 500


class UnsealFailed(AttestError):
    error = "unseal_failed"
    status = 500
