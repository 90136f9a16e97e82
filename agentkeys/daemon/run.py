"""Run the daemon from its configuration with the real dependencies wired in.

Wires: K10 (created at first start; TPM when present, else a 0600 software key; it never
leaves its backend), the daemon's own device session at the broker (signed in and renewed
with that K10: no operator session, master K10 or wallet on this host), the broker
heartbeat, the credential source (cap mint at the broker with K10 PoP + worker fetch with
worker PoP; ``identity.legacy_identity_omni`` is passed on so that v1 data is served), the
chain watcher for revocations when ``[chain]`` is set, and SIGINT/SIGTERM as a graceful
stop.
"""

from __future__ import annotations

import gc
import logging
import signal
from contextlib import AsyncExitStack

import httpx
import trio

from agentkeys.chain import ChainClient, ChainWatcher, read_deployment_record
from agentkeys.chain.events import ChainEvent
from agentkeys.config import ConfigError
from agentkeys.daemon._groups import raise_domain_error
from agentkeys.daemon.config import DaemonConfig
from agentkeys.daemon.credentials import BrokerWorkerSource
from agentkeys.daemon.heartbeat import HttpBrokerProbe
from agentkeys.daemon.service import Daemon, DaemonAddress
from agentkeys.daemon.session import DeviceSession
from agentkeys.omni import normalize_hex32
from attest.device_key import key_hash, open_device_key

__all__ = ["run_daemon"]

_log = logging.getLogger("agentkeys.daemon")


async def run_daemon(
    config: DaemonConfig,
    *,
    task_status: trio.TaskStatus[DaemonAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Build and serve the daemon until SIGINT/SIGTERM (graceful) or cancellation.

    Raises:
        ConfigError: a required setting is missing (nothing is served).
        DaemonError, AttestError: see :class:`Daemon`.
    """
    if config.broker.url is None:
        raise ConfigError("broker.url is required: the daemon fails closed without a broker")
    operator, actor = config.identity.operator_omni, config.identity.actor_omni
    if operator is None or actor is None:
        raise ConfigError("identity.operator_omni and identity.actor_omni are required")
    operator, actor = normalize_hex32(operator), normalize_hex32(actor)
    device = await open_device_key(
        config.device.backend, key_path=config.device.key_path, tcti=config.device.tcti
    )
    async with AsyncExitStack() as stack:
        stack.push_async_callback(device.aclose)
        dkh = key_hash(device)
        _log.info("K10 (%s) device_key_hash %s", device.backend.value, dkh)
        broker = await stack.enter_async_context(
            httpx.AsyncClient(base_url=config.broker.url, trust_env=False, timeout=10)
        )
        if config.credentials.worker_url is None:
            raise ConfigError("credentials.worker_url is required")
        worker = await stack.enter_async_context(
            httpx.AsyncClient(base_url=config.credentials.worker_url, trust_env=False, timeout=10)
        )
        session = DeviceSession(
            broker=broker,
            device_key=device,
            audience=config.broker.audience,
            operator_omni=operator,
            actor_omni=actor,
        )
        source = BrokerWorkerSource(
            broker=broker,
            worker=worker,
            device_key=device,
            session=session,
            operator_omni=operator,
            actor_omni=actor,
            legacy_identity_omni=config.identity.legacy_identity_omni,
        )
        events: trio.MemoryReceiveChannel[ChainEvent] | None = None
        watcher_duty = None
        if config.chain.rpc_url is not None and config.chain.deployment is not None:
            rpc_http = await stack.enter_async_context(
                httpx.AsyncClient(trust_env=False, timeout=10)
            )
            deployment = read_deployment_record(config.chain.deployment)
            rpc = ChainClient(rpc_http, config.chain.rpc_url, deployment.addresses).rpc
            head = int(await rpc.call("eth_blockNumber"), 16)
            watcher = ChainWatcher(
                rpc,
                deployment.addresses,
                start_block=max(head, deployment.block_number),
                confirmations=config.chain.confirmations,
                poll_interval=config.chain.poll_interval,
            )
            events = watcher.subscribe()
            watcher_duty = watcher.run
        else:
            _log.warning("no [chain] configured: revocations arrive only via broker refusals")
        daemon = Daemon(
            config=config,
            source=source,
            probe=HttpBrokerProbe(broker),
            session=session,
            device_key_hash=dkh,
            events=events,
            chain_watcher=watcher_duty,
        )
        with raise_domain_error():
            async with trio.open_nursery() as nursery:

                async def serve(*, task_status: trio.TaskStatus[DaemonAddress]) -> None:
                    await daemon.serve(task_status=task_status)
                    nursery.cancel_scope.cancel()  # stopped: end the signal watcher too

                nursery.start_soon(_stop_on_signals, daemon)
                address = await nursery.start(serve)
                # What start-up built lives as long as the daemon: exempt it from every
                # later collection (a full one over it stalls requests for tens of ms).
                gc.collect()
                gc.freeze()
                task_status.started(address)


async def _stop_on_signals(daemon: Daemon) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            _log.info("signal %d: stopping gracefully", signum)
            daemon.stop()
