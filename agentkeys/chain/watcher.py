"""Follow the agentkeys contracts' events and deliver them, typed, exactly once (SPEC section 6).

The watcher reads logs of the three contracts block range by block range, never past
``head - confirmations``, so reorgs inside the confirmation window are never seen. Each range
is read in chunks a capped RPC provider accepts (:class:`~agentkeys.chain.logs.LogReader`).
Before each range it checks that the last block it scanned still has the hash it had; when a
reorg deeper than the window replaced it, the watcher rewinds to the newest scanned block
that is still canonical and reads on from there, delivering the new branch's events (those
of the replaced blocks were delivered already and cannot be taken back: a
:class:`~agentkeys.chain.events.ChainReorged` notice goes to every subscriber before the new
branch's events, and ``reorgs`` counts rewinds, so that a consumer can drop what it derived
from them). When none of the blocks it remembers is canonical any more it raises
:class:`ReorgTooDeep`. It also checks every log's
block hash against the canonical block of that height. RPC failures are retried
with exponential backoff, forever; the position of the last delivered event survives them, so
nothing is delivered twice or skipped.

Subscribers get a ``trio.MemoryReceiveChannel``; delivery waits for a full subscriber
(backpressure), and a subscriber that closes its end is dropped.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

import trio

from agentkeys.chain._abi import ContractAbi
from agentkeys.chain._rpc import JsonRpc, quantity
from agentkeys.chain.artifacts import load_artifact
from agentkeys.chain.client import ContractAddresses
from agentkeys.chain.errors import (
    ChainConfigError,
    ReorgTooDeep,
    RpcError,
    RpcUnavailable,
)
from agentkeys.chain.events import (
    ChainEvent,
    ChainReorged,
    WatcherEvent,
    decode_log,
    position_of,
)
from agentkeys.chain.logs import LogReader

__all__ = ["ChainWatcher"]

log = logging.getLogger(__name__)


class _StaleView(RpcError):
    """The node's answers disagree (a reorg happened between two calls): retry the range."""


class ChainWatcher:
    """Delivers typed events of one deployment from ``start_block`` on.

    Args:
        rpc: the JSON-RPC endpoint (its httpx client is owned by the caller).
        addresses: the deployment.
        start_block: first block to scan (e.g. the deployment record's block, or a saved
            ``cursor``).
        confirmations: blocks to stay behind the head (0 on anvil).
        poll_interval: seconds between polls once caught up.
        max_backoff: ceiling of the retry delay after RPC errors.
        batch_blocks: most blocks scanned per poll.
        max_log_range: most blocks per ``eth_getLogs`` call (halved when the node refuses).
        history: scanned blocks remembered for finding where a reorg forked.
    """

    def __init__(
        self,
        rpc: JsonRpc,
        addresses: ContractAddresses,
        *,
        start_block: int,
        confirmations: int = 0,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        batch_blocks: int = 2000,
        max_log_range: int = 2000,
        history: int = 256,
    ) -> None:
        if start_block < 0 or confirmations < 0 or batch_blocks < 1 or history < 1:
            raise ChainConfigError(
                "watcher needs start_block, confirmations >= 0, batch and history >= 1"
            )
        self._rpc = rpc
        self._abis: dict[str, ContractAbi] = {
            addresses.registry.lower(): load_artifact("SidecarRegistry").abi,
            addresses.scope.lower(): load_artifact("ScopeContract").abi,
            addresses.epoch_counter.lower(): load_artifact("K3EpochCounter").abi,
        }
        self._confirmations = confirmations
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._batch = batch_blocks
        self._logs = LogReader(rpc, max_range=max_log_range)
        self._subscribers: list[trio.MemorySendChannel[WatcherEvent]] = []
        #: The next block to scan; persist it to resume after a restart.
        self.cursor = start_block
        #: Last blocks of scanned ranges (and the block before the first) with their hashes.
        self._anchors: deque[tuple[int, str]] = deque(maxlen=history)
        self._delivered: tuple[int, int] | None = None  # (block, log index) of the last event
        #: The chain head the last poll read (None before the first poll and after a
        #: failed one).
        self.head: int | None = None
        #: Reorgs below the confirmation depth the watcher rewound over.
        self.reorgs = 0
        #: RPC failures retried so far (for health reporting).
        self.rpc_failures = 0

    def subscribe(self, buffer: int = 64) -> trio.MemoryReceiveChannel[WatcherEvent]:
        """A channel receiving every event (and reorg notice) from now on; close it to
        unsubscribe."""
        send, receive = trio.open_memory_channel[WatcherEvent](buffer)
        self._subscribers.append(send)
        return receive

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the chain until cancelled.

        Raises:
            ReorgTooDeep: a delivered block was replaced.
            AbiError: a log of our contracts does not decode (wrong artifacts).
        """
        task_status.started()
        delay = self._poll_interval
        try:
            while True:
                try:
                    progressed = await self.poll_once()
                except (RpcUnavailable, RpcError) as exc:
                    self.rpc_failures += 1
                    log.warning("chain watcher: %s; retrying in %.1f s", exc.reason, delay)
                    await trio.sleep(delay)
                    delay = min(max(delay * 2, 0.05), self._max_backoff)
                    continue
                delay = self._poll_interval
                if not progressed:
                    await trio.sleep(self._poll_interval)
        finally:
            for channel in self._subscribers:
                channel.close()

    def head_lag(self) -> int | None:
        """Blocks between the head the last poll read and the last block scanned, whose
        events are all delivered (at least ``confirmations`` once caught up); None before the
        first poll and after a failed one."""
        if self.head is None:
            return None
        return max(self.head - (self.cursor - 1), 0)

    async def poll_once(self) -> bool:
        """Scan one range if one is confirmed; True when the cursor moved (or rewound)."""
        try:
            return await self._poll()
        except Exception:
            self.head = None
            raise

    async def _poll(self) -> bool:
        head = self.head = quantity(await self._rpc.call("eth_blockNumber"))
        rewound = await self._check_anchor()
        if rewound:
            await self._deliver(ChainReorged(fork_block=self.cursor - 1))
        safe = head - self._confirmations
        if safe < self.cursor:
            return rewound
        last = min(safe, self.cursor + self._batch - 1)
        logs = await self._logs.get_logs(self.cursor, last, list(self._abis))
        last_hash = await self._block_hash(last)
        events = await self._decode_checked(logs, {last: last_hash})
        for event in events:
            key = (event.position.block_number, event.position.log_index)
            if self._delivered is not None and key <= self._delivered:
                continue
            await self._deliver(event)
            self._delivered = key
        self.cursor = last + 1
        self._anchors.append((last, last_hash))
        return True

    async def _check_anchor(self) -> bool:
        """Rewind over a reorg that replaced scanned blocks; True when it did.

        Raises:
            ReorgTooDeep: none of the remembered blocks is canonical.
        """
        if not self._anchors:
            if self.cursor > 0:  # the fork point of a reorg of the first range
                self._anchors.append((self.cursor - 1, await self._block_hash(self.cursor - 1)))
            return False
        number, known = self._anchors[-1]
        if await self._block_hash(number) == known:
            return False
        self._anchors.pop()
        while self._anchors:
            number, known = self._anchors[-1]
            if await self._block_hash(number) == known:
                log.warning(
                    "chain watcher: reorg replaced blocks after %d; re-reading from %d",
                    number,
                    number + 1,
                )
                self.reorgs += 1
                self.cursor = number + 1
                self._delivered = (number, sys.maxsize)
                return True
            self._anchors.pop()
        raise ReorgTooDeep("a reorg replaced every block the watcher remembers")

    async def _block_hash(self, number: int) -> str:
        block = await self._rpc.call("eth_getBlockByNumber", hex(number), False)
        if not isinstance(block, dict) or not isinstance(block.get("hash"), str):
            raise _StaleView(f"block {number} not available")
        return str(block["hash"]).lower()

    async def _decode_checked(self, logs: list[Any], known: dict[int, str]) -> list[ChainEvent]:
        events: list[ChainEvent] = []
        for raw in logs:
            if not isinstance(raw, Mapping):
                raise RpcError("eth_getLogs answered a malformed log")
            if raw.get("removed") is True:
                raise _StaleView("log removed by a reorg")
            abi = self._abis.get(str(raw.get("address", "")).lower())
            if abi is None:
                continue
            position = position_of(raw)
            canonical = known.get(position.block_number)
            if canonical is None:
                canonical = known[position.block_number] = await self._block_hash(
                    position.block_number
                )
            if canonical != position.block_hash:
                raise _StaleView(f"log of block {position.block_number} is not canonical")
            event = decode_log(raw, abi)
            if event is not None:
                events.append(event)
        events.sort(key=lambda e: (e.position.block_number, e.position.log_index))
        return events

    async def _deliver(self, event: WatcherEvent) -> None:
        for channel in list(self._subscribers):
            try:
                await channel.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)
