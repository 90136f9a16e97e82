"""The command line's errors and exit codes: one tree, one exit status per leaf (docs/cli.md).

Errors of the command line (the CLI's own leaves; everything else is translated by
:func:`exit_code_for` and :func:`describe_error`)::

    AgentkeysError
    └── CliError (exit code by leaf; see EXIT_* and docs/cli.md)
        ├── NoOperatorState      no local operator state (run `agentkeys init`)        → 3
        ├── OperatorStateInvalid the state file is unreadable or malformed             → 3
        ├── SecretUnavailable    a secret file/prompt/stdin gave nothing usable        → 1
        ├── WalletMismatch       the wallet is not the operator's master wallet        → 1
        ├── Rejected             the request conflicts with the chain's state          → 6
        │                        (scope already present, unknown agent, revoked device)
        ├── UsageError           a missing or inconsistent option                      → 2
        ├── NoSession            no usable broker session in the home                  → 3
        ├── BrokerUnreachable    the broker did not answer                             → 1
        ├── WorkerUnreachable    the worker did not answer                             → 1
        └── PeerCodeError        a peer refused (its own code, as ``--json`` error)
            ├── BrokerRefused    the broker refused a sign-in step                     → 1
            │   ├── BrokerSessionRefused  the broker refused the home's session        → 3
            │   └── RelayRefused the broker's relay refused a master mutation          → 6
            │       └── RelayPasskeyRefused  … refused the passkey assertion           → 4
            └── SidecarRefused   the broker or worker refused a vault operation        → 6

:func:`peer_failure` is the one translation of a typed client's failure
(:mod:`agentkeys.clients.errors`) into this tree. Messages never hold secret material.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from agentkeys.chain import (
    ChainConfigError,
    ContractReverted,
    RpcError,
    RpcUnavailable,
    TransactionFailed,
)
from agentkeys.clients.errors import ClientError, PeerRefused, PeerUnreachable
from agentkeys.config import ConfigError
from agentkeys.errors import AgentkeysError, DomainError, FormatError
from agentkeys.passkey_page import PasskeyPageError, PasskeyWrongCredential
from attest.errors import AttestError

__all__ = [
    "EXIT_CHAIN_UNREACHABLE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_STATE",
    "EXIT_OK",
    "EXIT_PASSKEY",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "SESSION_REFUSALS",
    "BrokerRefused",
    "BrokerSessionRefused",
    "BrokerUnreachable",
    "CliError",
    "NoOperatorState",
    "NoSession",
    "OperatorStateInvalid",
    "PeerCodeError",
    "Rejected",
    "RelayPasskeyRefused",
    "RelayRefused",
    "SecretUnavailable",
    "SidecarRefused",
    "UsageError",
    "WalletMismatch",
    "WorkerUnreachable",
    "describe_error",
    "exit_code_for",
    "peer_failure",
]


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_STATE = 3
EXIT_PASSKEY = 4
EXIT_CHAIN_UNREACHABLE = 5
EXIT_REJECTED = 6
EXIT_INTERRUPTED = 130


class CliError(AgentkeysError):
    """Base of the command line's own errors; ``exit_code`` is the process exit status."""

    error: ClassVar[str] = "cli_error"
    status: ClassVar[int] = 400
    exit_code: ClassVar[int] = EXIT_FAILED


class NoOperatorState(CliError):
    """No operator state on this machine."""

    error = "no_operator_state"
    exit_code = EXIT_NO_STATE


class OperatorStateInvalid(CliError):
    """The operator state file is unreadable or malformed."""

    error = "operator_state_invalid"
    exit_code = EXIT_NO_STATE


class SecretUnavailable(CliError):
    """A secret could not be read (empty, unreadable, or no terminal to prompt on)."""

    error = "secret_unavailable"


class WalletMismatch(CliError):
    """The wallet given is not the operator's master wallet."""

    error = "wallet_mismatch"
    status = 403  # the one status of this code (agentkeys.error_codes)


class Rejected(CliError):
    """The request conflicts with what the chain says (already present, unknown, revoked)."""

    error = "rejected"
    status = 409
    exit_code = EXIT_REJECTED


class UsageError(CliError):
    """A missing or inconsistent option (exit 2)."""

    error = "usage_error"
    exit_code = EXIT_USAGE


class NoSession(CliError):
    """No usable broker session in the agentkeys home."""

    error = "no_session"
    exit_code = EXIT_NO_STATE


class BrokerUnreachable(CliError):
    """The broker did not answer."""

    error = "broker_unreachable"
    status = 503  # the one status of this code (agentkeys.error_codes)
    exit_code = EXIT_FAILED


class WorkerUnreachable(CliError):
    """The worker did not answer (exit 1, as an unreachable broker)."""

    error = "worker_unreachable"
    status = 503  # the one status of this code (agentkeys.error_codes)


class PeerCodeError(CliError):
    """Branch: a refusal by a peer whose own error ``code`` (also in the reason) ``--json``
    prints as ``error``."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class BrokerRefused(PeerCodeError):
    """The broker answered with an error (its ``error`` code is in the reason)."""

    error = "broker_refused"
    exit_code = EXIT_FAILED


class BrokerSessionRefused(BrokerRefused):
    """The broker refused the home's session (expired, revoked or invalid there)."""

    error = "broker_session_refused"
    status = 401  # the one status of this code (agentkeys.error_codes)
    exit_code = EXIT_NO_STATE


SESSION_REFUSALS = frozenset({"session_expired", "session_invalid", "session_revoked"})
"""The broker's codes for a session it will not accept (docs/api.md)."""


class RelayRefused(BrokerRefused):
    """The broker's relay refused a master mutation (exit 6: the chain's state does not allow
    it, e.g. not this operator's session, a device that may not approve, a bad K10)."""

    error = "relay_refused"
    status = 403  # the one status of this code (agentkeys.error_codes)
    exit_code = EXIT_REJECTED


class RelayPasskeyRefused(RelayRefused):
    """The broker's relay refused the passkey assertion (not a fresh one over the change)."""

    error = "relay_passkey_refused"
    exit_code = EXIT_PASSKEY


class SidecarRefused(PeerCodeError):
    """The broker or the worker refused a vault operation (their code, as ``--json`` error)."""

    error = "sidecar_refused"
    exit_code = EXIT_REJECTED


def peer_failure(exc: ClientError, *, url: object, vault: bool = False) -> CliError:
    """What a typed client's failure means on the command line.

    Args:
        url: the base URL of the peer that failed (named in the message).
        vault: a vault operation (``--credential-backend sidecar``): any refusal is
            :class:`SidecarRefused` (exit 6); else a sign-in or relay step, refused by
            :class:`BrokerSessionRefused` (the session), :class:`RelayRefused` /
            :class:`RelayPasskeyRefused` (a relay route's 401/403) or
            :class:`BrokerRefused`.
    """
    if isinstance(exc, PeerUnreachable):
        unreachable = WorkerUnreachable if exc.who == "worker" else BrokerUnreachable
        return unreachable(
            f"the {exc.who} at {url} is unreachable ({exc.transport}); "
            f"start it (`agentkeys dev up`) or pass --{exc.who}-url"
        )
    refused = SidecarRefused if vault else BrokerRefused
    if not isinstance(exc, PeerRefused):
        return refused(exc.reason)
    detail = f"{exc.code}: {exc.peer_reason}" if exc.code else f"HTTP {exc.http_status}"
    said = f"the {exc.who} refused {exc.path} ({' '.join(detail.split())})"
    if vault:
        return SidecarRefused(said, code=exc.code)
    if exc.code in SESSION_REFUSALS:
        advice = "; sign in again: `agentkeys session renew`"
        return BrokerSessionRefused(said + advice, code=exc.code)
    if exc.path.startswith("/v1/relay/") and exc.http_status in (401, 403):
        relay = RelayPasskeyRefused if exc.code == "relay_k11_invalid" else RelayRefused
        return relay(said, code=exc.code)
    return BrokerRefused(said, code=exc.code)


# What to do, per revert of our contracts (docs/contracts.md, "Errors").
_REVERT_ADVICE: Mapping[str, tuple[str, int]] = {
    "K11AssertionInvalid": (
        "the passkey did not match this device; use the passkey you enrolled with `agentkeys init`",
        EXIT_PASSKEY,
    ),
    "K11RpIdMismatch": (
        "the passkey belongs to another site (rpId); use the enrolled passkey",
        EXIT_PASSKEY,
    ),
    "K11SignCountNotIncreasing": (
        "the passkey's counter went backwards (a cloned passkey?); use the enrolled authenticator",
        EXIT_PASSKEY,
    ),
    "K11AssertionMalformed": ("the passkey answer was malformed; try again", EXIT_PASSKEY),
    "K10SignatureInvalid": (
        "this device's key (K10) is not the registered one; check --home and the device key",
        EXIT_REJECTED,
    ),
    "DeviceNotFound": (
        "the device is not registered on this chain; run `agentkeys init` or "
        "check the chain profile",
        EXIT_REJECTED,
    ),
    "DeviceNotAuthorised": (
        "this device may not authorise that change (revoked, not a master, or lacks the role)",
        EXIT_REJECTED,
    ),
    "DeviceAlreadyRevoked": ("that device is already revoked", EXIT_REJECTED),
    "DeviceAlreadyRegistered": ("that device key is already registered", EXIT_REJECTED),
    "DeviceOfOtherOperator": ("that device belongs to another operator", EXIT_REJECTED),
    "OperatorNotRegistered": (
        "the operator is not registered on this chain; run `agentkeys init`",
        EXIT_REJECTED,
    ),
    "ScopeNotFound": ("that agent has no scope to remove", EXIT_REJECTED),
    "InvalidLabel": ("agent labels are 1-32 characters of a-z, 0-9 and -", EXIT_USAGE),
    "ServicesInvalid": ("a scope holds 1 to 64 distinct services", EXIT_USAGE),
}


def exit_code_for(exc: BaseException) -> int:
    """The exit status of a failure (docs/cli.md lists them)."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, ContractReverted):
        return _REVERT_ADVICE.get(exc.revert_error, ("", EXIT_REJECTED))[1]
    if isinstance(exc, PasskeyPageError):
        return EXIT_PASSKEY
    if isinstance(exc, RpcUnavailable):
        return EXIT_CHAIN_UNREACHABLE
    if isinstance(exc, FormatError):
        return EXIT_USAGE
    if isinstance(exc, (ConfigError, ChainConfigError, AttestError)):
        return EXIT_NO_STATE
    return EXIT_FAILED


def describe_error(exc: DomainError) -> str:
    """One line: what happened and what to do (never secret material)."""
    if isinstance(exc, ContractReverted):
        advice = _REVERT_ADVICE.get(exc.revert_error)
        if advice is not None:
            return f"the chain refused the change ({exc.revert_error}): {advice[0]}"
        return f"the chain refused the change ({exc.revert_error})"
    if isinstance(exc, RpcUnavailable):
        return (
            f"the chain is unreachable ({exc.reason}); start it (`agentkeys dev up`) or "
            "check the chain profile's rpc_url"
        )
    if isinstance(exc, (RpcError, TransactionFailed)):
        return f"the chain did not take the transaction ({exc.reason}); try again"
    if isinstance(exc, PasskeyWrongCredential):
        return f"{exc.reason}; use the passkey you enrolled with `agentkeys init`"
    if isinstance(exc, ChainConfigError):
        return f"{exc.reason}; check chain.toml in the agentkeys home or AGENTKEYS_CHAIN_*"
    if isinstance(exc, AttestError):
        return f"the device key (K10) is unusable: {exc.reason}"
    return exc.reason
