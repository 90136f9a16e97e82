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
    ChainEvent,
    DeviceKeyRotated,
    DeviceRegistered,
    DeviceRevoked,
    EpochAdvanced,
    ScopeRevoked,
    ScopeSet,
)
from agentkeys.chain.watcher import ChainWatcher

__all__ = ["CachedChainView", "ChainReader"]

log = logging.getLogger("agentkeys.broker.chain")

T = TypeVar("T")
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
    """

    def __init__(self, reader: ChainReader) -> None:
        self._reader = reader
        self._devices: dict[str, DeviceEntry | None] = {}
        self._scopes: dict[tuple[str, str], ScopeEntry | None] = {}
        self._agent_operators: dict[str, str] = {}
        self._epoch: int | None = None
        self._generation = 0
        #: The last block whose events have all been applied (None: not following).
        self.synced_through: int | None = None
        #: Cache hits and misses (health reporting and tests).
        self.hits = 0
        self.misses = 0

    # -- reads -------------------------------------------------------------------------------

    async def _fresh(self) -> bool:
        if self.synced_through is None:
            return False
        with _chain_errors():
            head = await self._reader.block_number()
        return head <= self.synced_through

    async def _read(
        self,
        cached: Callable[[], tuple[bool, T]],
        store: Callable[[T], None],
        fetch: Callable[[], Awaitable[T]],
    ) -> T:
        fresh = await self._fresh()
        if fresh:
            present, value = cached()
            if present:
                self.hits += 1
                return value
        self.misses += 1
        generation = self._generation
        with _chain_errors():
            value = await fetch()
        if fresh and generation == self._generation:
            store(value)
        return value

    async def device(self, device_key_hash: str) -> DeviceEntry | None:
        """SidecarRegistry's entry for the device, or ``None``.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """

        def cached() -> tuple[bool, DeviceEntry | None]:
            return device_key_hash in self._devices, self._devices.get(device_key_hash)

        def store(value: DeviceEntry | None) -> None:
            self._bound(self._devices)
            self._devices[device_key_hash] = value

        return await self._read(cached, store, lambda: self._reader.get_device(device_key_hash))

    async def scope(self, operator_omni: str, actor_omni: str) -> ScopeEntry | None:
        """scope[operator][actor] on chain, or ``None`` when there is no entry.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        key = (operator_omni, actor_omni)

        def cached() -> tuple[bool, ScopeEntry | None]:
            return key in self._scopes, self._scopes.get(key)

        def store(value: ScopeEntry | None) -> None:
            self._bound(self._scopes)
            self._scopes[key] = value

        return await self._read(
            cached, store, lambda: self._reader.get_scope(operator_omni, actor_omni)
        )

    async def agent_operator(self, agent_omni: str) -> str | None:
        """The operator SidecarRegistry records for ``agent_omni`` as an agent, or ``None``.

        Raises:
            ChainUnavailable: the chain cannot be read.
        """
        known = self._agent_operators.get(agent_omni)
        if known is not None:
            self.hits += 1
            return known
        self.misses += 1
        with _chain_errors():
            value = await self._reader.agent_operator(agent_omni)
        if value is not None:
            if len(self._agent_operators) >= _MAX_ENTRIES:
                self._agent_operators.clear()
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

        def cached() -> tuple[bool, int]:
            return self._epoch is not None, self._epoch if self._epoch is not None else 0

        def store(value: int) -> None:
            self._epoch = value

        return await self._read(cached, store, self._reader.current_epoch)

    @staticmethod
    def _bound(
        table: dict[object, object]
        | dict[str, DeviceEntry | None]
        | dict[tuple[str, str], ScopeEntry | None],
    ) -> None:
        if len(table) >= _MAX_ENTRIES:
            table.clear()

    # -- invalidation ------------------------------------------------------------------------

    def apply(self, event: ChainEvent) -> None:
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
        failures it stops being trusted until the watcher catches up again.
        """
        events = watcher.subscribe(buffer=1_000_000)
        delay = poll_interval
        started = False
        try:
            while True:
                try:
                    progressed = await watcher.poll_once()
                except ChainError as exc:
                    self.synced_through = None
                    log.warning("broker chain watcher: %s; retrying in %.1f s", exc.reason, delay)
                    if not started:
                        task_status.started()
                        started = True
                    await trio.sleep(delay)
                    delay = min(max(delay * 2, 0.05), max_backoff)
                    continue
                delay = poll_interval
                while True:
                    try:
                        event = events.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.apply(event)
                self.synced_through = watcher.cursor - 1
                if not started:
                    task_status.started()
                    started = True
                if not progressed:
                    await trio.sleep(poll_interval)
        finally:
            self.synced_through = None
            events.close()
