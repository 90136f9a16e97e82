"""The command line's errors and exit codes: one tree, one exit status per leaf (docs/cli.md).

Errors of the command line (the CLI's own leaves; everything else is translated by
:func:`exit_code_for` and :func:`describe_error`)::

    AgentkeysError
    └── CliError (exit code by leaf; see EXIT_* and docs/cli.md)
        ├── NoOperatorState      no local operator state (run `agentkeys init`)        → 3
        ├── OperatorStateInvalid the state file is unreadable or malformed             → 3
        ├── SecretUnavailable    a secret file/prompt/stdin gave nothing usable        → 1
        ├── WalletMismatch       the wallet is not the operator's master wallet        → 1
        └── Rejected             the request conflicts with the chain's state          → 6
                                 (scope already present, unknown agent, revoked device)

Messages never hold secret material.
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
    "CliError",
    "NoOperatorState",
    "OperatorStateInvalid",
    "Rejected",
    "SecretUnavailable",
    "WalletMismatch",
    "describe_error",
    "exit_code_for",
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
