"""Errors of the credentials-service worker (SPEC.md sections 5, 7 worker and 9).

    AgentkeysError
    └── WorkerError                      500 worker_error
        ├── RequestRefused               400 request_refused     malformed request
        │   ├── CapMissing               401 cap_missing         no ``Authorization: Cap …``
        │   ├── PopMissing               401 pop_missing         no ``Agentkeys-Pop`` proof
        │   └── LegacyIdentityRequired   409 legacy_identity_required
        ├── ChainCheckFailed             403 chain_check_failed  (the worker's own chain checks)
        │   ├── EpochNotCurrent          409 epoch_not_current
        │   └── MasterWalletInvalid      409 master_wallet_invalid
        ├── CredentialNotFound           404 credential_not_found
        ├── StoredEnvelopeInvalid        500 stored_envelope_invalid
        ├── MigrationFailed              500 migration_failed    (read-back did not verify)
        ├── ChainUnavailable             503 chain_unavailable
        ├── SignerFailed                 502 signer_failed       (wrong answer; the signer's code)
        │   └── SignerUnavailable        503 signer_unavailable  (not reached: retry later)
        ├── StorageDenied                403 storage_denied      (S3 AccessDenied: policy)
        └── StorageFailed                502 storage_failed      (other S3 errors)
            └── StorageUnavailable       503 storage_unavailable (S3 not reached: retry later)

The device-binding leaves of the worker's chain re-check (``device_not_registered``,
``device_revoked``, ``binding_mismatch``, ``role_missing``, ``master_only``,
``actor_not_agent_of_operator``, ``service_not_in_scope``, ``read_only_scope``, all 403) are
the shared ones of ``agentkeys.errors`` (``BindingDenied``, rules in ``agentkeys.binding``),
re-exported here.

The ``…Unavailable`` leaves are for transport failures only (connection refused or reset,
timeouts, a connection closed before the answer): the dependency did not answer, and the
same request may succeed later. A dependency that answered wrongly (a refusal, malformed
data, a rejected certificate, AccessDenied) is the 502 parent. Existing ``except
SignerFailed`` / ``except StorageFailed`` clauses catch both.

Reasons name the failed check, the S3 operation, key and error code, or the signer's
error code; never a KEK, credential, token or signature.
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
    "CapMissing",
    "ChainCheckFailed",
    "ChainUnavailable",
    "CredentialNotFound",
    "DeviceNotRegistered",
    "DeviceRevoked",
    "EpochNotCurrent",
    "LegacyIdentityRequired",
    "MasterOnly",
    "MasterWalletInvalid",
    "MigrationFailed",
    "PopMissing",
    "ReadOnlyScope",
    "RequestRefused",
    "RoleMissing",
    "ServiceNotInScope",
    "SignerFailed",
    "SignerUnavailable",
    "StorageDenied",
    "StorageFailed",
    "StorageUnavailable",
    "StoredEnvelopeInvalid",
    "WorkerError",
]


class WorkerError(AgentkeysError):
    """Base of the worker's errors."""

    error: ClassVar[str] = "worker_error"
    status: ClassVar[int] = 500


class RequestRefused(WorkerError):
    """The request is malformed (headers or body)."""

    error: ClassVar[str] = "request_refused"
    status: ClassVar[int] = 400


class CapMissing(RequestRefused):
    """No ``Authorization: Cap <token>`` header."""

    error: ClassVar[str] = "cap_missing"
    status: ClassVar[int] = 401


class PopMissing(RequestRefused):
    """No ``Agentkeys-Pop`` header: a cap without its K10 proof is refused."""

    error: ClassVar[str] = "pop_missing"
    status: ClassVar[int] = 401


class LegacyIdentityRequired(RequestRefused):
    """A legacy (v1 KEK) envelope exists but the request named no ``legacy_identity_omni``."""

    error: ClassVar[str] = "legacy_identity_required"
    status: ClassVar[int] = 409


class ChainCheckFailed(WorkerError):
    """Branch: the worker's independent chain re-check refused the cap."""

    error: ClassVar[str] = "chain_check_failed"
    status: ClassVar[int] = 403


class EpochNotCurrent(ChainCheckFailed):
    """The cap's k3_epoch is not the chain's current epoch."""

    error: ClassVar[str] = "epoch_not_current"
    status: ClassVar[int] = 409


class MasterWalletInvalid(ChainCheckFailed):
    """The registry has no master wallet for the operator, or it does not hash to it."""

    error: ClassVar[str] = "master_wallet_invalid"
    status: ClassVar[int] = 409


class CredentialNotFound(WorkerError):
    """Neither the v2 nor the v1 key holds the credential."""

    error: ClassVar[str] = "credential_not_found"
    status: ClassVar[int] = 404


class StoredEnvelopeInvalid(WorkerError):
    """The stored envelope does not open (truncated, unknown version, tampered)."""

    error: ClassVar[str] = "stored_envelope_invalid"
    status: ClassVar[int] = 500


class MigrationFailed(WorkerError):
    """A migrated copy did not read back identical; nothing was reported migrated."""

    error: ClassVar[str] = "migration_failed"
    status: ClassVar[int] = 500


class ChainUnavailable(WorkerError):
    """The chain could not be read: fail closed."""

    error: ClassVar[str] = "chain_unavailable"
    status: ClassVar[int] = 503


class SignerFailed(WorkerError):
    """The signer answered wrongly: a refusal (its error code in the reason), a malformed
    or oversized answer, or a TLS peer that is not the signer."""

    error: ClassVar[str] = "signer_failed"
    status: ClassVar[int] = 502


class SignerUnavailable(SignerFailed):
    """The signer could not be reached (refused, reset, timed out, closed mid-answer)."""

    error: ClassVar[str] = "signer_unavailable"
    status: ClassVar[int] = 503


class StorageDenied(WorkerError):
    """S3 refused the per-actor credentials (the bucket policy, not our code, said no)."""

    error: ClassVar[str] = "storage_denied"
    status: ClassVar[int] = 403


class StorageFailed(WorkerError):
    """Any other S3 failure (the reason names the operation, key and error code)."""

    error: ClassVar[str] = "storage_failed"
    status: ClassVar[int] = 502


class StorageUnavailable(StorageFailed):
    """S3 could not be reached (endpoint refused, connect or read timeout, connection closed)."""

    error: ClassVar[str] = "storage_unavailable"
    status: ClassVar[int] = 503
