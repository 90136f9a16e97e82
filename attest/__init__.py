"""Caller attestation (E1, E2, E3) and device-key backends (TPM 2.0, software).

SPEC.md sections 2, 7 (attest) and 8. Public API (pinned by
tests/attest/test_exports.py):

* callers: :class:`CallerIdentity`, :class:`ProcessIdentity`, :class:`Transport`;
  :class:`CallerAttestor` (E1/E2 per accepted connection), :func:`create_unix_listener`,
  :func:`create_loopback_listener`, :func:`caller_from_scope`;
  :func:`identify_unix_peer` (E1), :func:`identify_tcp_peer` (E2). Serving HTTP to the
  attested callers is ``agentkeys.http1.serve_attested``'s.
* E3 pins: :class:`CallerPin`, :class:`PinAnswer`, :class:`PinKind`,
  :func:`new_challenge`, :func:`verify_pin_answer`, :func:`software_pin`,
  :func:`software_answer` (TPM client side: ``attest.tpm.tpm_enroll_pin`` /
  ``tpm_pin_answer``).
* K10: :class:`DeviceKey`, :class:`SoftwareDeviceKey`, :func:`open_device_key`,
  :func:`key_hash`, :class:`Backend`, :class:`BackendChoice`; bundles
  :class:`AttestationBundle`, :func:`make_bundle`, :func:`verify_bundle`.
* sealing: :class:`Sealer`, :class:`SoftwareSealer`, :func:`open_sealer`.
* errors: see :mod:`attest.errors`.

The TPM backend (``attest.tpm``) is imported lazily, only when a TPM is used.
"""

from attest.bundle import AttestationBundle, TpmEvidence, VerifiedBundle, make_bundle, verify_bundle
from attest.caller import CallerIdentity, ProcessIdentity, Transport
from attest.device_key import (
    Backend,
    BackendChoice,
    DeviceKey,
    SoftwareDeviceKey,
    default_key_path,
    key_hash,
    open_device_key,
)
from attest.errors import (
    AttestationMalformed,
    AttestationRefused,
    AttestError,
    CallerGone,
    CallerNotLocal,
    CallerUnidentified,
    DeviceKeyError,
    InsecurePath,
    KeyNotTrusted,
    NonceMismatch,
    PcrMismatch,
    SignatureInvalid,
    TpmError,
    TpmUnavailable,
    UnsealFailed,
)
from attest.netns import identify_tcp_peer
from attest.peercred import ExeHashCache, identify_unix_peer
from attest.pin import (
    CallerPin,
    PinAnswer,
    PinKind,
    VerifiedPin,
    new_challenge,
    software_answer,
    software_pin,
    verify_pin_answer,
)
from attest.seal import SealBackend, Sealer, SoftwareSealer, open_sealer
from attest.serve import (
    CallerAttestor,
    caller_from_scope,
    create_loopback_listener,
    create_unix_listener,
)

__all__ = [
    "AttestError",
    "AttestationBundle",
    "AttestationMalformed",
    "AttestationRefused",
    "Backend",
    "BackendChoice",
    "CallerAttestor",
    "CallerGone",
    "CallerIdentity",
    "CallerNotLocal",
    "CallerPin",
    "CallerUnidentified",
    "DeviceKey",
    "DeviceKeyError",
    "ExeHashCache",
    "InsecurePath",
    "KeyNotTrusted",
    "NonceMismatch",
    "PcrMismatch",
    "PinAnswer",
    "PinKind",
    "ProcessIdentity",
    "SealBackend",
    "Sealer",
    "SignatureInvalid",
    "SoftwareDeviceKey",
    "SoftwareSealer",
    "TpmError",
    "TpmEvidence",
    "TpmUnavailable",
    "Transport",
    "UnsealFailed",
    "VerifiedBundle",
    "VerifiedPin",
    "caller_from_scope",
    "create_loopback_listener",
    "create_unix_listener",
    "default_key_path",
    "identify_tcp_peer",
    "identify_unix_peer",
    "key_hash",
    "make_bundle",
    "new_challenge",
    "open_device_key",
    "open_sealer",
    "software_answer",
    "software_pin",
    "verify_bundle",
    "verify_pin_answer",
]
