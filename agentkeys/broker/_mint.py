"""The cap-mint decision (SPEC section 5): pure checks over what the chain says.

Inputs are plain values: the device entry from SidecarRegistry, the chain's scope entry, the
legacy scope entry (dual mode, SPEC section 9 step 2) and the request. The device-binding
rules are the shared ones of :mod:`agentkeys.binding` (rules 1–5 there), which the worker
applies again; what is the broker's own is which scope entry counts:

* actor == operator: no scope entry is needed (source ``master_self``);
* otherwise the chain's scope entry decides when there is one (source ``chain``), else the
  legacy table (source ``legacy``), else ``service_not_in_scope`` (source ``none``).

The epoch check (the cap's ``k3_epoch`` is the chain's current epoch) is made by the caller,
which fills the epoch in from the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agentkeys.binding import ROLE_CAP_MINT, ScopeGrant, check_agent_scope, check_device
from agentkeys.broker._store import LegacyScope
from agentkeys.cap import CapOp
from agentkeys.chain.client import ScopeEntry
from agentkeys.errors import ActorNotAgentOfOperator
from agentkeys.omni import service_hash

__all__ = [
    "ROLE_CAP_MINT",
    "ActorNotAgentOfOperator",
    "MintDecision",
    "ScopeSource",
    "check_binding",
    "decide_scope",
]

check_binding = check_device
"""Rules 1–4 of :mod:`agentkeys.binding` (the device, its binding, role and tier)."""


class ScopeSource(StrEnum):
    """Which source decided a mint's scope."""

    MASTER_SELF = "master_self"
    CHAIN = "chain"
    LEGACY = "legacy"
    NONE = "none"


@dataclass(frozen=True)
class MintDecision:
    """A mint the checks allowed, and the scope source that decided it."""

    scope_source: ScopeSource


def decide_scope(
    *,
    op: CapOp,
    operator_omni: str,
    actor_omni: str,
    service: str,
    agent_operator: str | None,
    chain_scope: ScopeEntry | None,
    legacy_scope: LegacyScope | None,
) -> MintDecision:
    """Rule 5 of :mod:`agentkeys.binding` over the scope entry that counts (module docstring).

    Args:
        agent_operator: SidecarRegistry's ``agent_operator(actor_omni)`` (64 hex), None when
            the actor is no registered agent; read by the caller whenever actor != operator.

    Raises:
        ActorNotAgentOfOperator, ServiceNotInScope, ReadOnlyScope.
    """
    if actor_omni == operator_omni:
        return MintDecision(ScopeSource.MASTER_SELF)
    grant: ScopeGrant | None = None
    source = ScopeSource.NONE
    if chain_scope is not None:
        source = ScopeSource.CHAIN
        grant = ScopeGrant(
            source=source.value,
            in_scope=service_hash(service).hex() in chain_scope.services,
            read_only=chain_scope.read_only,
        )
    elif legacy_scope is not None:
        source = ScopeSource.LEGACY
        grant = ScopeGrant(
            source=source.value,
            in_scope=service in legacy_scope.services,
            read_only=legacy_scope.read_only,
        )
    check_agent_scope(
        op=op, operator_omni=operator_omni, agent_operator=agent_operator, scope=grant
    )
    return MintDecision(source)
