"""How a transaction goes on chain: EIP-1559 fees and the nonce rule for shared wallets.

Fees: ``maxPriorityFeePerGas`` is the median tip of the last blocks (``eth_feeHistory``,
50th percentile of each block's rewards), or the node's ``eth_maxPriorityFeePerGas`` when
those blocks carried no tips; ``maxFeePerGas`` is twice the next block's base fee plus that
tip, so the transaction stays includable through six full blocks of base-fee rises.
Transactions are type 2 (EIP-1559), signed locally by eth-account.

Nonces: several processes may send from one relay wallet, so no process can own a counter.
Each attempt takes the node's *pending* nonce (mined plus pooled transactions). When two
senders took the same nonce the node refuses the later one ("nonce too low" once the other
was mined, "replacement transaction underpriced" while it is pooled); that attempt is
repeated with a fresh pending nonce, a bounded number of times. "already known" (anvil:
"transaction already imported") means this very signed transaction is pooled already: it is
waited for, not re-sent.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import Enum

from agentkeys.chain._rpc import JsonRpc, quantity
from agentkeys.chain.errors import RpcError

__all__ = ["Fees", "SendOutcome", "classify_send_error", "suggest_fees"]

#: Blocks of fee history the tip is the median of.
_HISTORY_BLOCKS = 10


@dataclass(frozen=True)
class Fees:
    """The two EIP-1559 fee fields, in wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int


async def suggest_fees(rpc: JsonRpc) -> Fees:
    """EIP-1559 fees for a transaction sent now (see the module docstring).

    Raises:
        RpcError: the node does not serve ``eth_feeHistory`` or answers malformed history
            (a pre-London chain: legacy transactions are not sent).
        RpcUnavailable: transport failure.
    """
    history = await rpc.call("eth_feeHistory", hex(_HISTORY_BLOCKS), "latest", [50])
    if not isinstance(history, dict):
        raise RpcError("eth_feeHistory answered a non-object")
    base_fees = history.get("baseFeePerGas")
    if not isinstance(base_fees, list) or not base_fees:
        raise RpcError("eth_feeHistory answered no base fee (chain without EIP-1559?)")
    next_base_fee = quantity(base_fees[-1])  # the block after the newest one
    rewards = history.get("reward") or []
    tips = [quantity(r[0]) for r in rewards if isinstance(r, list) and r]
    tip = int(statistics.median(t for t in tips if t > 0)) if any(tips) else 0
    if tip == 0:
        tip = quantity(await rpc.call("eth_maxPriorityFeePerGas"))
    return Fees(max_fee_per_gas=2 * next_base_fee + tip, max_priority_fee_per_gas=tip)


class SendOutcome(Enum):
    """What a refused ``eth_sendRawTransaction`` means for the sender."""

    RETRY = "retry"  # another sender took the nonce: take a fresh pending nonce
    POOLED = "pooled"  # this very transaction is pooled already: wait for it
    FAILED = "failed"  # anything else: give up


_NONCE_TAKEN = (
    "nonce too low",
    "replacement transaction underpriced",
    "replacement underpriced",
    "nonce has already been used",
)
#: This very transaction is in the pool (geth, anvil).
_POOLED = ("already known", "transaction already imported")


def classify_send_error(exc: RpcError) -> SendOutcome:
    """Map a node's refusal of a raw transaction to what the sender does next."""
    message = exc.reason.lower()
    if any(phrase in message for phrase in _POOLED):
        return SendOutcome.POOLED
    if any(phrase in message for phrase in _NONCE_TAKEN):
        return SendOutcome.RETRY
    return SendOutcome.FAILED
