"""What the chain says this daemon may no longer do (SPEC.md sections 6 and 8): pure state.

Fed with typed events from :mod:`agentkeys.chain.events` (the chain watcher). For an agent
daemon (actor ≠ operator):

* ``ScopeSet`` for (operator, actor) — the chain scope becomes exactly its services
  (on chain a service is keccak256 of its name, SPEC section 3); services that left it
  are refused from now on, and the cache is dropped when any service left.
* ``ScopeRevoked`` for (operator, actor) — every service is refused and dropped.
* ``DeviceRevoked`` of this device, or ``DeviceKeyRotated`` away from it — everything is
  refused and dropped (the device can no longer mint caps anyway).
* ``EpochAdvanced`` — the cache is dropped (caps name the epoch), nothing is refused.

Before any scope event the daemon knows no chain scope and leaves scope checks to the
broker and the worker, which re-check the chain on every mint and fetch.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.chain.events import (
    ChainEvent,
    DeviceKeyRotated,
    DeviceRevoked,
    EpochAdvanced,
    ScopeRevoked,
    ScopeSet,
)
from agentkeys.daemon.errors import ScopeRevoked as ScopeRevokedError
from agentkeys.errors import ServiceNotInScope
from agentkeys.omni import service_hash

__all__ = ["ALL_SERVICES", "RevocationState"]

ALL_SERVICES = None
"""Returned by :meth:`RevocationState.apply` to mean "drop every cached credential"."""


@dataclass(frozen=True)
class _Nothing:
    pass


_NOTHING = _Nothing()


class RevocationState:
    """See the module docstring.

    Args:
        operator_omni, actor_omni, device_key_hash: this daemon's identity (64 hex);
            ``None`` leaves the corresponding events unmatched.
    """

    def __init__(
        self,
        *,
        operator_omni: str | None,
        actor_omni: str | None,
        device_key_hash: str | None,
    ) -> None:
        self._operator = operator_omni
        self._actor = actor_omni
        self._device = device_key_hash
        self._is_master = operator_omni is not None and operator_omni == actor_omni
        self.device_revoked = False
        #: the chain scope last seen (keccak256 service hashes, hex), or None while unknown
        self.scope: frozenset[str] | None = None
        #: hashes a chain scope of this agent held once and no longer holds
        self.removed: set[str] = set()
        self._hashes: dict[str, str] = {}

    def _ours(self, operator: str, agent: str) -> bool:
        return not self._is_master and operator == self._operator and agent == self._actor

    def apply(self, event: ChainEvent) -> frozenset[str] | _Nothing | None:
        """Apply ``event``; returns the services to drop from the cache.

        Returns:
            a set of services, :data:`ALL_SERVICES` (None) for everything, or an
            object that is neither when nothing changes.
        """
        if isinstance(event, ScopeSet) and self._ours(event.operator_omni, event.agent_omni):
            new = frozenset(h.lower().removeprefix("0x") for h in event.services)
            old = self.scope
            self.scope = new
            self.removed = (self.removed | (old or frozenset())) - new
            # the cache is keyed by name, the chain by hash: drop all when any service left
            return ALL_SERVICES if old is None or old - new else _NOTHING
        if isinstance(event, ScopeRevoked) and self._ours(event.operator_omni, event.agent_omni):
            self.removed |= self.scope or frozenset()
            self.scope = frozenset()
            return ALL_SERVICES
        if isinstance(event, DeviceRevoked) and event.device_key_hash == self._device:
            self.device_revoked = True
            return ALL_SERVICES
        if isinstance(event, DeviceKeyRotated) and event.old_device_key_hash == self._device:
            self.device_revoked = True
            return ALL_SERVICES
        if isinstance(event, EpochAdvanced):
            return ALL_SERVICES
        return _NOTHING

    def outside_scope(self, services: frozenset[str]) -> frozenset[str]:
        """Those of ``services`` the known chain scope does not hold (none when unknown)."""
        if self.scope is None:
            return frozenset()
        return frozenset(s for s in services if self._hash(s) not in self.scope)

    def check(self, service: str) -> None:
        """Refuse ``service`` if the chain revoked it.

        Raises:
            ScopeRevoked: device revoked, or ``service`` removed from the chain scope.
            ServiceNotInScope: ``service`` outside the known chain scope, never granted
                since this daemon watches the chain.
        """
        if self.device_revoked:
            raise ScopeRevokedError("this device was revoked on chain")
        if self.scope is None:
            return
        digest = self._hash(service)
        if digest in self.removed:
            raise ScopeRevokedError(f"{service!r} was removed from this agent's chain scope")
        if digest not in self.scope:
            raise ServiceNotInScope(
                f"{service!r} is not in this agent's chain scope; the operator grants it with "
                f"`agentkeys scope add <agent> {service}`"
            )

    def _hash(self, service: str) -> str:
        digest = self._hashes.get(service)
        if digest is None:
            digest = service_hash(service).hex()
            if len(self._hashes) < 1024:
                self._hashes[service] = digest
        return digest


def changes_nothing(result: object) -> bool:
    """Whether an :meth:`RevocationState.apply` result means "no cache change"."""
    return isinstance(result, _Nothing)
