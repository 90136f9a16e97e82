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
* ``ChainReorged`` (the watcher rewound over a reorg) — the cache is dropped, since a
  cached credential may have been fetched on the strength of an event that was rolled
  back, and the state goes back to what it was after the last event at or before the fork
  block (kept for the last :data:`HISTORY` changes; older than that, the current state
  stays: refusals are kept, fail closed). The new branch's events follow and apply as
  usual, so a revocation re-included after the reorg evicts again.

Before any scope event the daemon knows no chain scope and leaves scope checks to the
broker and the worker, which re-check the chain on every mint and fetch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agentkeys.chain.events import (
    ChainEvent,
    ChainReorged,
    DeviceKeyRotated,
    DeviceRevoked,
    EpochAdvanced,
    ScopeRevoked,
    ScopeSet,
    WatcherEvent,
)
from agentkeys.daemon.errors import ScopeRevoked as ScopeRevokedError
from agentkeys.errors import ServiceNotInScope
from agentkeys.omni import service_hash

__all__ = ["ALL_SERVICES", "HISTORY", "RevocationState"]

ALL_SERVICES = None
"""Returned by :meth:`RevocationState.apply` to mean "drop every cached credential"."""


@dataclass(frozen=True)
class _Nothing:
    pass


_NOTHING = _Nothing()

HISTORY = 256
"""State changes remembered for rolling back over a reorg (the watcher's default history)."""


@dataclass(frozen=True)
class _Snapshot:
    """The state as it was after every event up to ``block``."""

    block: int = field(compare=False)
    scope: frozenset[str] | None
    removed: frozenset[str]
    device_revoked: bool


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
        #: the state before the first event, then after each change, oldest first
        self._history: deque[_Snapshot] = deque([self._snapshot(-1)], maxlen=HISTORY)

    def _snapshot(self, block: int) -> _Snapshot:
        return _Snapshot(block, self.scope, frozenset(self.removed), self.device_revoked)

    def _ours(self, operator: str, agent: str) -> bool:
        return not self._is_master and operator == self._operator and agent == self._actor

    def apply(self, event: WatcherEvent) -> frozenset[str] | _Nothing | None:
        """Apply ``event``; returns the services to drop from the cache.

        Returns:
            a set of services, :data:`ALL_SERVICES` (None) for everything, or an
            object that is neither when nothing changes.
        """
        if isinstance(event, ChainReorged):
            self._roll_back(event.fork_block)
            return ALL_SERVICES
        result = self._apply(event)
        snapshot = self._snapshot(event.position.block_number)
        if snapshot != self._history[-1]:
            self._history.append(snapshot)
        return result

    def _roll_back(self, fork_block: int) -> None:
        """Back to the state after the last event at or before ``fork_block``, if known."""
        kept = [s for s in self._history if s.block <= fork_block]
        if not kept:  # that state is older than the history: keep every refusal
            return
        self._history = deque(kept, maxlen=HISTORY)
        last = kept[-1]
        self.scope, self.removed = last.scope, set(last.removed)
        self.device_revoked = last.device_revoked

    def _apply(self, event: ChainEvent) -> frozenset[str] | _Nothing | None:
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
