"""Broker replicas: several ``python -m agentkeys.broker`` processes on one PostgreSQL.

:func:`replica_configs` turns one broker configuration into ``count`` replica
configurations: each its own port, state directory and audit log, all on the same
PostgreSQL database (``[state] backend = postgres``, the password from the server's 0600
file), with the shared key set in the store (``[keys] source = store``) sealed under one
seal key file, and one public URL (the issuer of sessions and OIDC tokens: replicas behind
a load balancer share it; here it is replica 0's address). :func:`running_replicas`
starts them as :class:`~bench._children.Child` processes (real Hypercorn, each its own
interpreter) and stops them on exit, however it is left.

:func:`issue_j1` is the shortcut of :mod:`bench._stack` for replicas: a J1 session signed
with the shared session key and recorded in the shared store, so every replica accepts it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from agentkeys._files import write_private
from agentkeys.broker import J1, BrokerKeys, SessionIssuer
from agentkeys.broker._keys import KeySeal
from agentkeys.broker._run import open_keys, open_state_store
from agentkeys.broker.config import BrokerConfig, KeySettings, StateSettings
from agentkeys.devstack import pick_port
from bench._children import Child, config_toml

__all__ = ["broker_keys", "issue_j1", "replica_configs", "running_replicas"]


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def replica_configs(
    base: BrokerConfig,
    *,
    count: int,
    directory: Path,
    dsn: str,
    password_file: Path,
    keys: KeySettings | None = None,
    pool_size: int = 8,
) -> list[BrokerConfig]:
    """``count`` replicas of ``base`` under ``directory`` (module docstring).

    ``keys`` defaults to ``base.keys`` with ``source = store`` and the seal key file under
    ``directory``; replica 0 listens on ``base.broker.port`` when it is set.
    """
    seal = _private_dir(directory / "seal") / "seal.key"
    shared_keys = dataclasses.replace(keys or base.keys, source="store", seal_key_file=seal)
    ports = [base.broker.port or pick_port()] + [pick_port() for _ in range(count - 1)]
    public_url = f"http://127.0.0.1:{ports[0]}"
    configs = []
    for index, port in enumerate(ports):
        home = _private_dir(directory / f"replica-{index}")
        configs.append(
            dataclasses.replace(
                base,
                broker=dataclasses.replace(base.broker, port=port, audit_log=home / "audit.jsonl"),
                state=StateSettings(
                    dir=_private_dir(home / "state"),
                    backend="postgres",
                    dsn=dsn,
                    password_file=password_file,
                    pool_size=pool_size,
                ),
                site=dataclasses.replace(base.site, public_url=public_url),
                keys=shared_keys,
            )
        )
    return configs


@asynccontextmanager
async def running_replicas(
    configs: Sequence[BrokerConfig], directory: Path
) -> AsyncIterator[list[Child]]:
    """Start one broker process per config (at once); yield them once all listen.

    The seal key file is created first: replicas each creating a missing one at once would
    each seal with a key of their own (in production every replica gets a copy of one file).
    """
    for seal in {config.seal_key_file for config in configs}:
        await KeySeal.open(seal)
    children = []
    for index, config in enumerate(configs):
        path = _private_dir(directory / "config") / f"broker-{index}.toml"
        write_private(path, config_toml(config))
        log = _private_dir(directory / "logs") / f"broker-{index}.log"
        children.append(Child(f"broker-{index}", "agentkeys.broker", path, config.broker.port, log))
    async with AsyncExitStack() as stack:

        async def stop_all() -> None:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    for child in children:
                        nursery.start_soon(child.stop)

        stack.push_async_callback(stop_all)
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(child.start)
        yield children


async def issue_j1(config: BrokerConfig, *, subject: str, wallet: str, lifetime: int = 3600) -> str:
    """A J1 session for ``subject`` that every replica of ``config`` accepts (docstring)."""
    store = await open_state_store(config)
    try:
        keys, _ = await open_keys(config, store)
        issuer = SessionIssuer(
            keys.session,
            store,
            issuer=config.site.public_url,
            audience=config.site.session_audience,
        )
        token, _ = await issuer.issue(
            stage=J1, subject=subject, now=int(time.time()), lifetime=lifetime,
            extra={"wallet": wallet},
        )  # fmt: skip
    finally:
        await store.aclose()
    return token


async def broker_keys(config: BrokerConfig) -> BrokerKeys:
    """The keys the brokers of ``config`` sign with now (key files, or the shared set)."""
    store = await open_state_store(config)
    try:
        keys, _ = await open_keys(config, store)
    finally:
        await store.aclose()
    return keys
