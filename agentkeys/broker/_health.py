"""``GET /v1/health``: how far the broker's chain view has synced, and whether it relays."""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.broker._chainview import CachedChainView

__all__ = ["Health", "HealthReport"]


@dataclass(frozen=True)
class HealthReport:
    chain_synced_through: int | None  # the last block the chain view has applied
    relay: bool  # hosted-relay mode is on


class Health:
    """The health core: the chain view and whether a relay is configured."""

    def __init__(self, *, chain: CachedChainView, relay: bool) -> None:
        self._chain = chain
        self._relay = relay

    async def report(self) -> HealthReport:
        """The chain view's sync point and the relay mode."""
        return HealthReport(chain_synced_through=self._chain.synced_through, relay=self._relay)
