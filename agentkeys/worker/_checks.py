"""The worker's independent chain re-check of a cap (SPEC.md section 5), pure.

Inputs are what the chain says (device entry, scope entry, current epoch, master wallet)
and the verified cap payload. In this order:

1–5. the device-binding rules of :mod:`agentkeys.binding` (the same the broker applied when
   it minted), with the chain's scope entry only: the broker's legacy scope table is not
   consulted, the worker trusts only the chain;
6. the cap's k3_epoch is the chain's current epoch;
7. the operator's master wallet is registered and its actor_omni is the operator_omni.

The device must be looked up before the K10 proof can be checked (its key is on chain), so
:func:`require_device` (rule 1's first half) is separate from :func:`check_chain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.binding import (
    ROLE_CAP_MINT,
    ScopeGrant,
    check_agent_scope,
    check_device,
    require_device,
)
from agentkeys.cap import CapPayload
from agentkeys.chain.client import DeviceEntry, ScopeEntry
from agentkeys.errors import ActorNotAgentOfOperator, FormatError
from agentkeys.omni import actor_omni_for_wallet, service_hash
from agentkeys.worker.errors import EpochNotCurrent, MasterWalletInvalid

__all__ = [
    "ROLE_CAP_MINT",
    "ActorNotAgentOfOperator",
    "ChainFacts",
    "check_chain",
    "require_device",
]


@dataclass(frozen=True)
class ChainFacts:
    """What the chain said about one cap, read just before the decision.

    ``agent_operator`` is SidecarRegistry's ``agent_operator(cap actor)`` (64 hex), read when
    the actor is not the operator; None (not read, or no agent) fails such a cap closed.
    """

    device: DeviceEntry
    scope: ScopeEntry | None
    current_epoch: int
    master_wallet: str | None
    agent_operator: str | None = None


def check_chain(cap: CapPayload, facts: ChainFacts) -> str:
    """Rules 1-7 of the module docstring; returns the master wallet (lowercase 0x hex).

    Raises:
        DeviceRevoked, BindingMismatch, RoleMissing, MasterOnly, ActorNotAgentOfOperator,
        ServiceNotInScope, ReadOnlyScope, EpochNotCurrent, MasterWalletInvalid.
    """
    check_device(
        facts.device, op=cap.op, operator_omni=cap.operator_omni, actor_omni=cap.actor_omni
    )
    if cap.actor_omni != cap.operator_omni:
        scope = facts.scope
        check_agent_scope(
            op=cap.op,
            operator_omni=cap.operator_omni,
            agent_operator=facts.agent_operator,
            scope=None
            if scope is None
            else ScopeGrant(
                source="chain",
                in_scope=service_hash(cap.service).hex() in scope.services,
                read_only=scope.read_only,
            ),
        )
    if cap.k3_epoch != facts.current_epoch:
        raise EpochNotCurrent(
            f"cap names K3 epoch {cap.k3_epoch}, the chain's current epoch is {facts.current_epoch}"
        )
    wallet = facts.master_wallet
    if wallet is None:
        raise MasterWalletInvalid("the registry has no master wallet for the operator")
    try:
        matches = actor_omni_for_wallet(wallet) == cap.operator_omni
    except FormatError:
        matches = False
    if not matches:
        raise MasterWalletInvalid("the registry's master wallet does not hash to the operator")
    return wallet
