"""anvil, the development EVM chain (SPEC section 10).

``start_anvil`` runs anvil from the repository's ``node_modules`` (see
``_binaries.anvil_binary``) on 127.0.0.1 and yields an ``Anvil`` once
``eth_chainId`` answers. The dev accounts are anvil's default
mnemonic accounts, read back from anvil's ``--config-out`` file, so they are
exactly what the node uses.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
import trio

from agentkeys.devstack._binaries import anvil_binary
from agentkeys.devstack._ports import LOOPBACK, pick_port
from agentkeys.devstack._process import LaunchPlan, launch
from agentkeys.devstack._rundir import run_directory
from agentkeys.devstack.errors import ComponentStartFailed

DEFAULT_CHAIN_ID = 31337
_GRACE = 5.0
_ATTEMPTS = 3


class DevAccount(NamedTuple):
    """A funded dev account: address and private key, both ``0x`` hex."""

    address: str
    private_key: str


@dataclass(frozen=True)
class Anvil:
    """A running anvil node.

    Attributes:
        rpc_url: JSON-RPC over HTTP, ``http://127.0.0.1:<port>``.
        port: the RPC port (pass it back as ``port=`` to restart on the same port).
        chain_id: the node's chain id.
        accounts: the funded dev accounts, in anvil's order.
        hardfork: the ``--hardfork`` given, or None for anvil's default.
        state_path: the ``--state`` file, or None.
        log_path: anvil's output.
    """

    rpc_url: str
    port: int
    chain_id: int
    accounts: tuple[DevAccount, ...]
    hardfork: str | None
    state_path: Path | None
    log_path: Path
    _process: trio.Process = field(repr=False, compare=False)

    @property
    def pid(self) -> int:
        """Process id of the launched program (the leader of its process group)."""
        return self._process.pid


async def _chain_id(client: httpx.AsyncClient, url: str) -> int | None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    try:
        response = await client.post(url, json=body)
        result = response.json().get("result")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not isinstance(result, str):
        return None
    try:
        return int(result, 16)
    except ValueError:
        return None


def _read_accounts(config_out: Path) -> tuple[DevAccount, ...] | None:
    """The dev accounts from anvil's ``--config-out`` file; None until it is complete.

    anvil answers JSON-RPC before it has always finished writing this file, so
    readiness waits for both.
    """
    try:
        data = json.loads(config_out.read_text())
        addresses = data["available_accounts"]
        keys = data["private_keys"]
        return tuple(DevAccount(str(a), str(k)) for a, k in zip(addresses, keys, strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@asynccontextmanager
async def start_anvil(
    *,
    hardfork: str | None = None,
    state_path: Path | None = None,
    port: int | None = None,
    block_time: float | None = None,
    chain_id: int = DEFAULT_CHAIN_ID,
    run_dir: Path | None = None,
    startup_timeout: float = 20.0,
) -> AsyncIterator[Anvil]:
    """Run anvil until the block ends; it is stopped however the block is left.

    Args:
        hardfork: anvil ``--hardfork`` (e.g. ``"prague"``, which lacks the P-256
            precompile at 0x100); None keeps anvil's default (which has it).
        state_path: anvil ``--state`` file: loaded at start if it exists and
            written when anvil stops, so a later run continues the chain.
        port: a fixed RPC port (e.g. to restart on the same URL); None picks a
            free one (retried if another process takes it first).
        block_time: seconds between blocks; None mines on every transaction.
        chain_id: the chain id.
        run_dir: where ``anvil.log`` and ``anvil-config.json`` go; None uses a
            temporary directory removed afterwards.
        startup_timeout: seconds to wait for ``eth_chainId`` and the account list.

    Raises:
        BinaryNotFound: anvil is not installed.
        ComponentStartFailed: anvil exited or did not answer in time (with log tail).
    """
    binary = anvil_binary()
    with run_directory(run_dir, "anvil") as directory:
        log_path = directory / "anvil.log"
        config_out = directory / "anvil-config.json"

        def plan() -> LaunchPlan[int]:
            chosen = port if port is not None else pick_port()
            argv = [
                str(binary),
                "--host", LOOPBACK,
                "--port", str(chosen),
                "--chain-id", str(chain_id),
                "--config-out", str(config_out),
            ]  # fmt: skip
            if hardfork is not None:
                argv += ["--hardfork", hardfork]
            if state_path is not None:
                argv += ["--state", str(state_path)]
            if block_time is not None:
                argv += ["--block-time", f"{block_time:g}"]
            return LaunchPlan(ports=chosen, argv=tuple(argv))

        async with httpx.AsyncClient(timeout=2.0) as client:

            async def ready(chosen: int) -> bool:
                answered = await _chain_id(client, f"http://{LOOPBACK}:{chosen}") == chain_id
                return answered and _read_accounts(config_out) is not None

            async with launch(
                "anvil",
                plan=plan,
                ready=ready,
                log_path=log_path,
                startup_timeout=startup_timeout,
                grace=_GRACE,
                attempts=1 if port is not None else _ATTEMPTS,
            ) as (chosen, process):
                accounts = _read_accounts(config_out)
                if accounts is None:  # ready() saw it; only a vanished file gets here
                    raise ComponentStartFailed(f"anvil's account list vanished: {config_out}")
                yield Anvil(
                    rpc_url=f"http://{LOOPBACK}:{chosen}",
                    port=chosen,
                    chain_id=chain_id,
                    accounts=accounts,
                    hardfork=hardfork,
                    state_path=state_path,
                    log_path=log_path,
                    _process=process,
                )
