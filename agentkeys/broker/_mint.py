"""The cap-mint decision (SPEC section 5): pure checks over what the chain says.

Inputs are plain values: the device entry from SidecarRegistry, the chain's scope entry, the
legacy scope entry (dual mode, SPEC section 9 step 2) and the request. Order of checks, each
one ``if …: raise …``:

1. the device is registered (``device_not_registered``), not revoked (``device_revoked``);
2. it is bound to the request's operator_omni; an agent device also to exactly its
   actor_omni (``binding_mismatch``). A master device acts for its own vault (actor ==
   operator) or, as the operator, on an agent's vault of the same operator;
3. it holds CAP_MINT (``role_missing``);
4. store, teardown and list need a master device (``master_only``);
5. actor == operator: no scope entry needed (source ``master_self``); otherwise the actor
   must be an agent of this operator on chain, i.e. SidecarRegistry's
   ``agent_operator(actor)`` is the operator (``actor_not_agent_of_operator``), whichever
   source holds its scope: a scope entry (chain or legacy) never lets a master act for
   another operator's actor. Then the chain's
   scope entry decides when there is one (source ``chain``), else the legacy table (source
   ``legacy``), else ``service_not_in_scope`` (source ``none``); the service must be in it
   (``service_not_in_scope``) and store / teardown need ``read_only == false``
   (``read_only_scope``).

The epoch check (the cap's ``k3_epoch`` is the chain's current epoch) is made by the caller,
which fills the epoch in from the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agentkeys.broker._store import LegacyScope
from agentkeys.broker.errors import (
    ActorNotAgentOfOperator,
    BindingMismatch,
    DeviceNotRegistered,
    DeviceRevoked,
    MasterOnly,
    ReadOnlyScope,
    RoleMissing,
    ServiceNotInScope,
)
from agentkeys.cap import CapOp
from agentkeys.chain.client import DeviceEntry, ScopeEntry, Tier
from agentkeys.omni import service_hash

__all__ = [
    "ROLE_CAP_MINT",
    "ActorNotAgentOfOperator",
    "MintDecision",
    "ScopeSource",
    "check_binding",
    "decide_scope",
]

ROLE_CAP_MINT = 1
_MASTER_OPS = frozenset({CapOp.STORE, CapOp.TEARDOWN, CapOp.LIST})
_WRITE_OPS = frozenset({CapOp.STORE, CapOp.TEARDOWN})


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


def check_binding(
    device: DeviceEntry | None, *, op: CapOp, operator_omni: str, actor_omni: str
) -> DeviceEntry:
    """Steps 1–4 of the module docstring; returns the device.

    Raises:
        DeviceNotRegistered, DeviceRevoked, BindingMismatch, RoleMissing, MasterOnly.
    """
    if device is None:
        raise DeviceNotRegistered("the device is not registered in SidecarRegistry")
    if device.revoked:
        raise DeviceRevoked("the device has been revoked")
    if device.operator_omni != operator_omni:
        raise BindingMismatch("the device belongs to another operator")
    if device.tier == Tier.MASTER:
        if device.actor_omni != operator_omni:
            raise BindingMismatch("the master device is not bound to its operator")
    elif device.actor_omni != actor_omni:
        raise BindingMismatch("the device is bound to another actor")
    if not device.has_roles(ROLE_CAP_MINT):
        raise RoleMissing("the device does not hold the CAP_MINT role")
    if op in _MASTER_OPS and device.tier != Tier.MASTER:
        raise MasterOnly(f"{op.value} is for master devices only")
    return device


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
    """Step 5 of the module docstring.

    Args:
        agent_operator: SidecarRegistry's ``agent_operator(actor_omni)`` (64 hex), None when
            the actor is no registered agent; read by the caller whenever actor != operator.

    Raises:
        ActorNotAgentOfOperator, ServiceNotInScope, ReadOnlyScope.
    """
    if actor_omni == operator_omni:
        return MintDecision(ScopeSource.MASTER_SELF)
    if agent_operator != operator_omni:
        raise ActorNotAgentOfOperator("the actor is not an agent of this operator on chain")
    if chain_scope is not None:
        source = ScopeSource.CHAIN
        in_scope = service_hash(service).hex() in chain_scope.services
        read_only = chain_scope.read_only
    elif legacy_scope is not None:
        source = ScopeSource.LEGACY
        in_scope = service in legacy_scope.services
        read_only = legacy_scope.read_only
    else:
        raise ServiceNotInScope("the actor has no scope entry (chain or legacy)")
    if not in_scope:
        raise ServiceNotInScope(f"the service is not in the actor's scope ({source.value})")
    if op in _WRITE_OPS and read_only:
        raise ReadOnlyScope(f"the actor's scope is read-only ({source.value})")
    return MintDecision(source)
