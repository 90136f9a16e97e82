"""A relay process for the shared-wallet test: ``python -m tests.chain._relay_child``.

Reads one JSON line ``{"rpc_url", "to", "count", "tag"}`` and then the wallet key on the
next line (stdin: a key never goes in argv), prints ``ready``, waits for ``go``, sends
``count`` transactions from that wallet through :class:`ChainClient` (calldata ``tag-i``,
so no two are the same) and prints one JSON line: ``{"hashes": [...], "retries": n}``.
"""

from __future__ import annotations

import json
import logging
import sys

import httpx
import trio

from agentkeys.chain.client import ChainClient, account_from_key


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "nonce taken" in record.getMessage():
            self.count += 1


async def _main() -> None:
    job = json.loads(sys.stdin.readline())
    wallet = account_from_key(sys.stdin.readline().strip())
    retries = _Retries()
    chain_log = logging.getLogger("agentkeys.chain.client")
    chain_log.addHandler(retries)
    chain_log.setLevel(logging.INFO)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        client = ChainClient(http, job["rpc_url"], send_attempts=20)
        await client.chain_id()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("expected go")
        hashes = []
        for i in range(job["count"]):
            data = f"{job['tag']}-{i}".encode()
            receipt = await client.send_transaction(wallet, job["to"], data, context="transfer")
            hashes.append(receipt.tx_hash)
    print(json.dumps({"hashes": hashes, "retries": retries.count}), flush=True)


if __name__ == "__main__":
    trio.run(_main)
