"""The device-binding rules of a cap (SPEC.md section 5), pure, for every side that applies them.

The broker applies them before it mints a cap (``agentkeys.broker._mint``), the worker again
on every cap it is shown (``agentkeys.worker._checks``), each from what it read of the chain.
One ``if …: raise …`` per rule, in this order (each leaf is in ``agentkeys.errors``, 403):

1. the device is registered (``device_not_registered``) and not revoked (``device_revoked``);
2. it is bound to the operator_omni; an agent device to exactly the actor_omni; a master
   device is bound to its operator and acts for its own vault (actor == operator) or, as the
   operator, on an agent's vault of the same operator (``binding_mismatch``);
3. it holds CAP_MINT (``role_missing``);
4. store, teardown and list need a master device (``master_only``);
5. actor != operator: the actor must be an agent of this operator on chain, i.e.
   SidecarRegistry's ``agent_operator(actor)`` is the operator
   (``actor_not_agent_of_operator``), so a scope entry never lets a master act for another
   operator's actor; then the actor's scope entry must exist and list the service
   (``service_not_in_scope``), and store / teardown need ``read_only == false``
   (``read_only_scope``).

Which scope entry counts is each side's choice: the broker takes the chain's, else its
legacy table's (dual mode, SPEC section 9 step 2); the worker trusts only the chain's.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.cap import CapOp
from agentkeys.chain import ROLE_CAP_MINT
from agentkeys.chain.client import DeviceEntry, Tier
from agentkeys.errors import (
    ActorNotAgentOfOperator,
    BindingMismatch,
    DeviceNotRegistered,
    DeviceRevoked,
    MasterOnly,
    ReadOnlyScope,
    RoleMissing,
    ServiceNotInScope,
)

__all__ = [
    "MASTER_OPS",
    "ROLE_CAP_MINT",
    "WRITE_OPS",
    "ScopeGrant",
    "check_agent_scope",
    "check_device",
    "require_device",
]

MASTER_OPS = frozenset({CapOp.STORE, CapOp.TEARDOWN, CapOp.LIST})
"""Operations only a master device may ask for (rule 4)."""

WRITE_OPS = frozenset({CapOp.STORE, CapOp.TEARDOWN})
"""Operations a read-only scope refuses (rule 5)."""


@dataclass(frozen=True)
class ScopeGrant:
    """What the actor's scope entry says about one service: listed or not, read-only or not.

    ``source`` names the entry for reasons (``"chain"``, ``"legacy"``).
    """

    source: str
    in_scope: bool
    read_only: bool


def require_device(device: DeviceEntry | None) -> DeviceEntry:
    """Rule 1's first half: the device entry, or DeviceNotRegistered.

    The worker needs the entry (its K10 key) before it can check the proof, so this half
    stands alone; :func:`check_device` starts with it too.
    """
    if device is None:
        raise DeviceNotRegistered("the device is not registered in SidecarRegistry")
    return device


def check_device(
    device: DeviceEntry | None, *, op: CapOp, operator_omni: str, actor_omni: str
) -> DeviceEntry:
    """Rules 1–4 of the module docstring; returns the device.

    Raises:
        DeviceNotRegistered, DeviceRevoked, BindingMismatch, RoleMissing, MasterOnly.
    """
    device = require_device(device)
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
    if op in MASTER_OPS and device.tier != Tier.MASTER:
        raise MasterOnly(f"{op.value} is for master devices only")
    return device


def check_agent_scope(
    *,
    op: CapOp,
    operator_omni: str,
    agent_operator: str | None,
    scope: ScopeGrant | None,
) -> None:
    """Rule 5 of the module docstring, for an actor that is not the operator.

    Args:
        agent_operator: SidecarRegistry's ``agent_operator(actor)`` (64 hex); None when the
            actor is no registered agent (or it was not read), which fails closed.
        scope: the scope entry the caller trusts, None when there is none.

    Raises:
        ActorNotAgentOfOperator, ServiceNotInScope, ReadOnlyScope.
    """
    if agent_operator != operator_omni:
        raise ActorNotAgentOfOperator("the actor is not an agent of this operator on chain")
    if scope is None:
        raise ServiceNotInScope("the actor has no scope entry")
    if not scope.in_scope:
        raise ServiceNotInScope(f"the service is not in the actor's scope ({scope.source})")
    if op in WRITE_OPS and scope.read_only:
        raise ReadOnlyScope(f"the actor's scope is read-only ({scope.source})")
