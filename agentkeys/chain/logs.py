"""``eth_getLogs`` over block ranges wider than an RPC provider allows.

Hosted RPC providers cap one ``eth_getLogs`` call (a block range, a result count or an
answer size). :class:`LogReader` splits a range into chunks of at most ``max_range`` blocks
and, when the provider refuses a chunk as too large, halves the chunk and keeps the smaller
size for later calls; a refusal of a single block is an error. The logs come back in chunk
order, which is block order, exactly as one call over the whole range would answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agentkeys.chain._rpc import JsonRpc, RevertData
from agentkeys.chain.errors import ChainConfigError, RpcError

__all__ = ["LogReader", "is_range_refusal"]

log = logging.getLogger(__name__)

#: What providers answer when a getLogs range or its result is too large (geth, Infura,
#: Alchemy, QuickNode, Ankr, anvil's own cap, lowercased).
_REFUSALS = (
    "range too large",
    "range is too large",
    "block range",
    "limit exceeded",
    "exceed",
    "more than",
    "too many",
    "response size",
    "is limited to",
)
#: JSON-RPC "limit exceeded" (EIP-1474).
_LIMIT_EXCEEDED = -32005


def is_range_refusal(exc: RpcError) -> bool:
    """True when the node refused an ``eth_getLogs`` call for its size."""
    if isinstance(exc, RevertData):
        return False
    message = exc.reason.lower()
    return exc.code == _LIMIT_EXCEEDED or any(phrase in message for phrase in _REFUSALS)


class LogReader:
    """Reads logs of ``addresses`` over any block range, in capped chunks.

    Args:
        rpc: the JSON-RPC endpoint.
        max_range: most blocks per call to start with (halved when the node refuses).
    """

    def __init__(self, rpc: JsonRpc, *, max_range: int = 2000) -> None:
        if max_range < 1:
            raise ChainConfigError("max_range must be >= 1")
        self._rpc = rpc
        #: The chunk size in use (smaller than configured once a node refused).
        self.max_range = max_range

    async def get_logs(self, first: int, last: int, addresses: Sequence[str]) -> list[Any]:
        """Every log of ``addresses`` in blocks ``first..last`` (inclusive), in order.

        Raises:
            RpcError: the node refused even one block, or answered a non-list.
            RpcUnavailable: transport failure.
        """
        logs: list[Any] = []
        start = first
        while start <= last:
            end = min(last, start + self.max_range - 1)
            query = {"fromBlock": hex(start), "toBlock": hex(end), "address": list(addresses)}
            try:
                chunk = await self._rpc.call("eth_getLogs", query)
            except RpcError as exc:
                if end == start or not is_range_refusal(exc):
                    raise
                self.max_range = max(1, (end - start + 1) // 2)
                log.info("eth_getLogs refused %d blocks; now %d", end - start + 1, self.max_range)
                continue
            if not isinstance(chunk, list):
                raise RpcError("eth_getLogs answered a non-list")
            logs += chunk
            start = end + 1
        return logs
