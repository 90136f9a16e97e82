"""The worker's independent chain re-check of a cap (SPEC.md section 5), pure.

Inputs are what the chain says (device entry, scope entry, current epoch, master wallet)
and the verified cap payload. One ``if …: raise …`` per rule, in this order:

1. the device is registered, not revoked;
2. it is bound to the cap's operator_omni; an agent device to exactly the cap's
   actor_omni; a master device is bound to its operator and acts for its own vault
   (actor == operator) or, as the operator, for an agent's vault;
3. it holds CAP_MINT;
4. store, teardown and list need a master device;
5. actor != operator: the actor must be an agent of this operator on chain
   (SidecarRegistry's ``agent_operator(actor)`` is the cap's operator), so a scope entry can
   never let a master act for another operator's actor; then scope[operator][actor] must
   exist on chain and list the service;
   store and teardown need ``read_only == false``. (The broker's legacy scope table is not
   consulted: the worker trusts only the chain.)
6. the cap's k3_epoch is the chain's current epoch;
7. the operator's master wallet is registered and its actor_omni is the operator_omni.

The device must be looked up before the K10 proof can be checked (its key is on chain), so
:func:`require_device` (rule 1's first half) is separate from :func:`check_chain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.cap import CapOp, CapPayload
from agentkeys.chain.client import DeviceEntry, ScopeEntry, Tier
from agentkeys.errors import FormatError
from agentkeys.omni import actor_omni_for_wallet, service_hash
from agentkeys.worker.errors import (
    ActorNotAgentOfOperator,
    BindingMismatch,
    DeviceNotRegistered,
    DeviceRevoked,
    EpochNotCurrent,
    MasterOnly,
    MasterWalletInvalid,
    ReadOnlyScope,
    RoleMissing,
    ServiceNotInScope,
)

__all__ = [
    "ROLE_CAP_MINT",
    "ActorNotAgentOfOperator",
    "ChainFacts",
    "check_chain",
    "require_device",
]

ROLE_CAP_MINT = 1
MASTER_OPS = frozenset({CapOp.STORE, CapOp.TEARDOWN, CapOp.LIST})
WRITE_OPS = frozenset({CapOp.STORE, CapOp.TEARDOWN})


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


def require_device(device: DeviceEntry | None) -> DeviceEntry:
    """The device entry, or DeviceNotRegistered."""
    if device is None:
        raise DeviceNotRegistered("the cap's device is not registered in SidecarRegistry")
    return device


def check_chain(cap: CapPayload, facts: ChainFacts) -> str:
    """Rules 1-7 of the module docstring; returns the master wallet (lowercase 0x hex).

    Raises:
        DeviceRevoked, BindingMismatch, RoleMissing, MasterOnly, ActorNotAgentOfOperator,
        ServiceNotInScope, ReadOnlyScope, EpochNotCurrent, MasterWalletInvalid.
    """
    device = facts.device
    if device.revoked:
        raise DeviceRevoked("the cap's device has been revoked")
    if device.operator_omni != cap.operator_omni:
        raise BindingMismatch("the device belongs to another operator")
    if device.tier == Tier.MASTER:
        if device.actor_omni != cap.operator_omni:
            raise BindingMismatch("the master device is not bound to its operator")
    elif device.actor_omni != cap.actor_omni:
        raise BindingMismatch("the device is bound to another actor")
    if not device.has_roles(ROLE_CAP_MINT):
        raise RoleMissing("the device does not hold the CAP_MINT role")
    if cap.op in MASTER_OPS and device.tier != Tier.MASTER:
        raise MasterOnly(f"{cap.op.value} is for master devices only")
    if cap.actor_omni != cap.operator_omni:
        if facts.agent_operator != cap.operator_omni:
            raise ActorNotAgentOfOperator("the actor is not an agent of this operator on chain")
        if facts.scope is None:
            raise ServiceNotInScope("the actor has no scope entry on chain")
        if service_hash(cap.service).hex() not in facts.scope.services:
            raise ServiceNotInScope("the service is not in the actor's scope on chain")
        if cap.op in WRITE_OPS and facts.scope.read_only:
            raise ReadOnlyScope("the actor's scope is read-only")
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
