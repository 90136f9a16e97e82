"""The sidecar daemon in its own process, for the ``sidecar`` and ``memory`` scenarios.

Run by :mod:`bench.daemon` as ``python -m bench._sidecar_child '<json>'`` with the
paths and URLs of one benchmark setup: it runs ``agentkeys.daemon.run.run_daemon`` (the
production assembly: software K10, the daemon's own device session signed in with it,
the broker + worker credential source, the chain watcher), waits until ``/readyz``
answers 200 (first broker heartbeat done, device session signed in), prints one JSON
line with the daemon's addresses, and serves until its stdin is closed; then it stops
gracefully (SIGTERM to itself, which ``run_daemon`` handles). A separate process gives
the daemon its own interpreter, as in production, and makes its RSS measurable on its
own.

The fault and soak tests (``tests.faults._stack``) run the same child with
``"fault_timeouts": true`` in the setup: short heartbeat and upstream timeouts, so a
fault shows within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import trio

from agentkeys.daemon.config import (
    AuditSection,
    BrokerSection,
    ChainSection,
    CredentialsSection,
    DaemonConfig,
    DeviceSection,
    EnvSection,
    IdentitySection,
    ListenSection,
    PolicySection,
    UpstreamSection,
)
from agentkeys.daemon.run import run_daemon

_READY_TIMEOUT = 60.0


def _config(setup: dict[str, str]) -> DaemonConfig:
    fault_timeouts = bool(setup.get("fault_timeouts"))
    return DaemonConfig(
        listen=ListenSection(socket=Path(setup["socket"]), tcp_port=0, graceful_timeout=2.0),
        policy=PolicySection(path=Path(setup["policy"])),
        broker=BrokerSection(
            url=setup["broker_url"],
            heartbeat_interval=1.0,
            heartbeat_timeout=2.0 if fault_timeouts else BrokerSection().heartbeat_timeout,
        ),
        credentials=CredentialsSection(worker_url=setup["worker_url"]),
        identity=IdentitySection(operator_omni=setup["operator"], actor_omni=setup["operator"]),
        device=DeviceSection(backend="software", key_path=Path(setup["key_path"])),
        chain=ChainSection(rpc_url=setup["rpc_url"], deployment=Path(setup["deployment"])),
        audit=AuditSection(path=Path(setup["audit"])),
        upstream=(
            UpstreamSection(connect_timeout=2.0, read_timeout=3.0, write_timeout=5.0)
            if fault_timeouts
            else UpstreamSection()
        ),
        env=EnvSection(write=False),
    )


async def _wait_ready(socket_path: str) -> None:
    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
        with trio.fail_after(_READY_TIMEOUT):
            # readiness is only observable over HTTP: poll it
            while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.05)


async def _serve(setup: dict[str, str]) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(run_daemon, _config(setup))
        await _wait_ready(address.socket_path)
        print(json.dumps({"socket": address.socket_path, "tcp_url": address.tcp_url}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        os.kill(os.getpid(), signal.SIGTERM)  # run_daemon stops gracefully on SIGTERM


def main() -> None:
    """Entry point: ``argv[1]`` is the JSON setup (:mod:`bench.daemon`, ``tests.faults._stack``)."""
    trio.run(_serve, json.loads(sys.argv[1]))


if __name__ == "__main__":
    main()
