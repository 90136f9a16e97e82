"""Errors of the chain layer (SPEC.md section 6).

    AgentkeysError
    └── ChainError                     anything about the chain, its RPC or our contracts
        ├── ChainConfigError           profile / deployment record / artifact unusable (500)
        ├── RpcUnavailable             the RPC endpoint cannot be reached or timed out (503)
        ├── RpcError                   the node answered with a JSON-RPC error (502)
        ├── ContractReverted           a call or transaction reverted; ``revert_error`` names it
        │                              (the contract's custom error, e.g. K11SignCountNotIncreasing)
        ├── TransactionFailed          mined with status 0, or never mined in time (502)
        ├── AbiError                   a value does not encode, or chain data does not decode (502)
        └── ReorgTooDeep               the watcher saw a reorg below its confirmation depth (503)

Reasons never carry key material or signatures.
"""

from __future__ import annotations

from agentkeys.errors import AgentkeysError

__all__ = [
    "AbiError",
    "ChainConfigError",
    "ChainError",
    "ContractReverted",
    "InsufficientFunds",
    "ReorgTooDeep",
    "RpcError",
    "RpcUnavailable",
    "TransactionFailed",
]


class ChainError(AgentkeysError):
    """Base of every chain-layer failure."""

    error = "chain_error"
    status = 502


class ChainConfigError(ChainError):
    """A chain profile, deployment record or contract artifact is missing or malformed."""

    error = "chain_config_invalid"
    status = 500


class RpcUnavailable(ChainError):
    """The JSON-RPC endpoint could not be reached (connection refused, timeout)."""

    error = "chain_unavailable"
    status = 503


class RpcError(ChainError):
    """The node answered a JSON-RPC error that is not a revert."""

    error = "chain_rpc_error"
    status = 502

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class ContractReverted(ChainError):
    """A call or transaction reverted.

    ``revert_error`` is the decoded custom error name (``"K11AssertionInvalid"``), ``"Error"``
    for a string reason, ``"Panic"``, or ``"unknown"`` when the data matches no known ABI;
    ``revert_args`` are the decoded arguments.
    """

    error = "chain_reverted"
    status = 409

    def __init__(
        self, reason: str, *, revert_error: str, revert_args: tuple[object, ...] = ()
    ) -> None:
        super().__init__(reason)
        self.revert_error = revert_error
        self.revert_args = revert_args


class InsufficientFunds(ChainError):
    """The sending wallet cannot pay the gas; ``address`` is the wallet to fund."""

    error = "chain_insufficient_funds"
    status = 402

    def __init__(self, reason: str, *, address: str) -> None:
        super().__init__(reason)
        self.address = address


class TransactionFailed(ChainError):
    """A transaction was mined with status 0 or was not mined before the deadline."""

    error = "chain_transaction_failed"
    status = 502


class AbiError(ChainError):
    """A value could not be ABI-encoded, or data from the chain could not be decoded."""

    error = "chain_abi_error"
    status = 502


class ReorgTooDeep(ChainError):
    """A block the watcher had already delivered as confirmed was replaced by a reorg."""

    error = "chain_reorg_too_deep"
    status = 503
