"""The broker's view of the chain: typed reads, cached, invalidated by the chain watcher.

SPEC sections 5, 6 and 9 (step 2). The broker reads a device entry, a scope entry and the
current K3 epoch for every cap mint (an operator's master wallet at sign-in and OIDC
minting, uncached), and, when the actor is not the operator, the operator the registry
records for the actor as an agent (``agent_operator``). Reads are cached, and the cache is
trusted only while the watcher has processed every block up to the chain's head: a mint
first asks the node for its head (one cheap call) and, if the watcher lags behind it, reads
around the cache. Events (device registered / revoked / rotated, scope set / revoked, epoch
advanced) drop the affected entries as soon as the watcher sees them, so a revocation takes
effect at the next mint, without waiting for any TTL. An agent's operator is set once on
chain and never changes (and it can only ever be the operator the agent omni was hashed
from, even across a reorg), so a recorded operator is cached for good and an absent one is
never cached.

With ``max_staleness`` the view does not ask for the head on every read: it trusts its
cache while the watcher saw the head, with every event up to it applied, at most that many
seconds ago, so a hit is a dict lookup (a cap mint makes no RPC at all) and a change on
chain takes effect within ``max_staleness`` plus one poll interval instead of at once.

A value read while an invalidation happened is not stored (a generation counter guards the
race). Every chain failure becomes :class:`~agentkeys.broker.errors.ChainUnavailable`: the
broker fails closed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import trio

from agentkeys.broker.errors import ChainUnavailable
from agentkeys.chain.client import DeviceEntry, ScopeEntry
from agentkeys.chain.errors import ChainError
from agentkeys.chain.events import (
    DeviceKeyRotated,
    DeviceRegistered,
    DeviceRevoked,
    EpochAdvanced,
    ScopeRevoked,
    ScopeSet,
    WatcherEvent,
)
from agentkeys.chain.watcher import ChainWatcher

__all__ = ["CachedChainView", "ChainReader"]

log = logging.getLogger("agentkeys.broker.chain")

T = TypeVar("T")
_K = TypeVar("_K")
_V = TypeVar("_V")
_MAX_ENTRIES = 10_000


class ChainReader(Protocol):
    """The typed reads the broker needs (agentkeys.chain.client.ChainClient satisfies it)."""

    async def get_device(self, device_key_hash: str | bytes) -> DeviceEntry | None: ...

    async def get_scope(
        self, operator_omni: str | bytes, actor_omni: str | bytes
    ) -> ScopeEntry | None: ...

    async def agent_operator(self, agent_omni: str | bytes) -> str | None: ...

    async def master_wallet(self, operator_omni: str | bytes) -> str | None: ...

    async def current_epoch(self) -> int: ...

    async def block_number(self) -> int: ...


@contextmanager
def _chain_errors() -> Iterator[None]:
    try:
        yield
    except ChainError as exc:
        raise ChainUnavailable(f"cannot read the chain: {exc.error}") from exc


class CachedChainView:
    """Cached reads over a :class:`ChainReader` (see the module docstring).

    Args:
        reader: the chain client.
        max_staleness: 0 (the default): every read first asks the node for its head, so a
            change on chain takes effect at the next read. Above 0: the cache is trusted
            without asking while the watcher saw the chain's head, and had applied every
            event up to it, at most ``max_staleness`` seconds ago (by ``now``), so a hit is
            a dict lookup; a change on chain then takes effect within ``max_staleness`` plus
            the watcher's poll interval. It must exceed the poll interval, or the cache is
            never trusted.
        now: the clock ``max_staleness`` is measured with (Trio's, seconds).
    """

    def __init__(
        self,
        reader: ChainReader,
        *,
        max_staleness: float = 0.0,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        if max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        self._reader = reader
        self._max_staleness = max_staleness
        self._now = now
        self._devices: dict[str, DeviceEntry | None] = {}
        self._scopes: dict[tuple[str, str], ScopeEntry | None] = {}
        self._agent_operators: dict[str, str] = {}
        self._epoch: int | None = None
        self._generation = 0
        #: The last block whose events have all been applied (None: not following).
        self.synced_through: int | None = None
        #: The chain head last read, by a read of this view or a poll of the watcher.
        self._head: int | None = None
        #: ``now`` time until which the cache is trusted without asking the node (bounded mode).
        self._trusted_until = float("-inf")
        #: Cache hits and misses (health reporting and tests).
        self.hits = 0
        self.misses = 0

    # -- reads -------------------------------------------------------------------------------

    async def _fresh(self) -> bool:
        if self.synced_through is None:
            return False
        if self._max_staleness > 0:
            return self._now() <= self._trusted_until
        with _chain_errors():
            head = self._head = await self._reader.block_number()
        return head <= self.synced_through

    def head_lag(self) -> int | None:
        """The chain head last read (by a read of this view or a poll of the watcher) minus
        the last block whose events are applied; None while not following."""
        if self.synced_through is None or self._head is None:
            return None
        return max(self._head - self.synced_through, 0)

    async def _fetch(self, fetch: Callable[[], Awaitable[T]]) -> T:
        self.misses += 1
        with _chain_errors():
            return await fetch()

    async def device(self, device_key_hash: str) -> DeviceEntry | None:
        """SidecarRegistry's entry for the device, or ``None``.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        fresh = await self._fresh()
        if fresh and device_key_hash in self._devices:
            self.hits += 1
            return self._devices[device_key_hash]
        generation = self._generation
        value = await self._fetch(lambda: self._reader.get_device(device_key_hash))
        if fresh and generation == self._generation:
            _bound(self._devices)
            self._devices[device_key_hash] = value
        return value

    async def scope(self, operator_omni: str, actor_omni: str) -> ScopeEntry | None:
        """scope[operator][actor] on chain, or ``None`` when there is no entry.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        key = (operator_omni, actor_omni)
        fresh = await self._fresh()
        if fresh and key in self._scopes:
            self.hits += 1
            return self._scopes[key]
        generation = self._generation
        value = await self._fetch(lambda: self._reader.get_scope(operator_omni, actor_omni))
        if fresh and generation == self._generation:
            _bound(self._scopes)
            self._scopes[key] = value
        return value

    async def agent_operator(self, agent_omni: str) -> str | None:
        """The operator SidecarRegistry records for ``agent_omni`` as an agent, or ``None``.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        known = self._agent_operators.get(agent_omni)
        if known is not None:
            self.hits += 1
            return known
        value = await self._fetch(lambda: self._reader.agent_operator(agent_omni))
        if value is not None:
            _bound(self._agent_operators)
            self._agent_operators[agent_omni] = value
        return value

    async def master_wallet(self, operator_omni: str) -> str | None:
        """The operator's master wallet on chain (lowercase ``0x`` hex), ``None`` before its
        first master registered. Never cached: it decides whether sign-in must prove the
        chain-registered passkey, and a registration must take effect at once.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        with _chain_errors():
            return await self._reader.master_wallet(operator_omni)

    async def epoch(self) -> int:
        """The chain's current K3 epoch.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        fresh = await self._fresh()
        if fresh and self._epoch is not None:
            self.hits += 1
            return self._epoch
        generation = self._generation
        value = await self._fetch(self._reader.current_epoch)
        if fresh and generation == self._generation:
            self._epoch = value
        return value

    # -- invalidation ------------------------------------------------------------------------

    def apply(self, event: WatcherEvent) -> None:
        """Drop every cached value ``event`` may have changed."""
        self._generation += 1
        if isinstance(event, DeviceRegistered | DeviceRevoked):
            self._devices.pop(event.device_key_hash, None)
        elif isinstance(event, DeviceKeyRotated):
            self._devices.pop(event.old_device_key_hash, None)
            self._devices.pop(event.new_device_key_hash, None)
        elif isinstance(event, ScopeSet | ScopeRevoked):
            self._scopes.pop((event.operator_omni, event.agent_omni), None)
        elif isinstance(event, EpochAdvanced):
            self._epoch = None

    def invalidate_all(self) -> None:
        """Forget everything (e.g. after the watcher lost track)."""
        self._generation += 1
        self._trusted_until = float("-inf")
        self._devices.clear()
        self._scopes.clear()
        self._epoch = None

    async def follow(
        self,
        watcher: ChainWatcher,
        *,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Drive ``watcher`` and apply its events until cancelled (a task of the broker).

        The cache is only trusted after a poll has applied all events up to a block; on RPC
        failures it stops being trusted until the watcher catches up again. With
        ``max_staleness`` set, a poll that reached the head it read trusts the cache until
        ``max_staleness`` seconds after that read began.
        """
        events = watcher.subscribe(buffer=1_000_000)
        reorgs = watcher.reorgs
        delay = poll_interval
        started = False
        try:
            while True:
                polled_at = self._now()
                try:
                    progressed = await watcher.poll_once()
                except ChainError as exc:
                    self.synced_through = None
                    self._trusted_until = float("-inf")
                    log.warning("broker chain watcher: %s; retrying in %.1f s", exc.reason, delay)
                    if not started:
                        task_status.started()
                        started = True
                    await trio.sleep(delay)
                    delay = min(max(delay * 2, 0.05), max_backoff)
                    continue
                delay = poll_interval
                if watcher.reorgs != reorgs:  # values read from replaced blocks may be cached
                    reorgs = watcher.reorgs
                    self.invalidate_all()
                while True:
                    try:
                        event = events.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.apply(event)
                self.synced_through = watcher.cursor - 1
                self._head = watcher.head
                if watcher.head is not None and self.synced_through >= watcher.head:
                    self._trusted_until = polled_at + self._max_staleness
                if not started:
                    task_status.started()
                    started = True
                if not progressed:
                    await trio.sleep(poll_interval)
        finally:
            self.synced_through = None
            self._trusted_until = float("-inf")
            events.close()


def _bound(table: dict[_K, _V]) -> None:
    if len(table) >= _MAX_ENTRIES:
        table.clear()
