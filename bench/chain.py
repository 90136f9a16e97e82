"""Scenario ``chain``: contract reads through :class:`agentkeys.chain.ChainClient`.

A real anvil node (``agentkeys.devstack.start_anvil``) gets the contract set
deployed and one operator with a registered master device (one transaction each,
outside the timed part). Timed reads, one at a time (``chain seq``) and from
several concurrent Trio tasks (``chain xN``):

* ``rpc-floor`` (baseline): ``eth_blockNumber`` through the same JSON-RPC client,
  the cost of one HTTP round trip to anvil with nothing to execute;
* ``get-device``: ``SidecarRegistry.get_device`` (eth_call, ABI encode/decode of
  a 14-field struct);
* ``scope-check``: ``ScopeContract.is_service_in_scope``.

Then the broker's :class:`agentkeys.broker.CachedChainView` (``broker chain-view``):
the three reads a cap mint makes (device, scope, epoch) through the view with its
watcher following the chain (``cached``) and without (``uncached``), against the same
three reads straight from ChainClient (``direct``). In its default (strict) mode a
cached read still asks the node for its head first (the view trusts its cache only up
to the watcher's block), so the cache saves the ``eth_call`` execution and decoding,
not the round trips (``cached``). With ``max_staleness`` (``cached-bounded``) the view
trusts its cache for that long after the watcher reached the head, and a hit is a dict
lookup: that row's ratio against ``direct`` is what a cache hit costs against an RPC read.
A hit never yields to Trio, so the timed loop starves the watcher's poll task and the
trust runs out now and then: the few misses in that row's notes are those.

ChainClient speaks JSON-RPC over an injected ``httpx.AsyncClient``, so these
figures include httpx (which tops out near 850 requests/s here); that is the
production read path, and the reason the broker and worker cache chain reads.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import trio

from agentkeys.chain import challenge as ch
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import Deployment, deploy_all
from agentkeys.chain.signing import SoftwareK10Signer
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.devstack import start_anvil
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet, agent_omni
from bench._errors import BenchError
from bench._model import Row, summarise
from bench._profile import Profile

__all__ = ["register_operator", "run"]

_RP_ID = "agentkeys.localhost"
_ORIGIN = "https://agentkeys.localhost"
_ALL_ROLES = 7
#: The watchers' poll interval and the bounded view's staleness in the chain-view rows.
_POLL = 0.2
_STALENESS = 1.0


async def _timed(
    operation: Callable[[], Awaitable[object]], *, seconds: float, tasks: int
) -> tuple[list[int], float]:
    """Run ``operation`` from ``tasks`` concurrent tasks for ``seconds``; latencies and wall."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    begin = clock()
    deadline = begin + int(seconds * 1e9)

    async def worker() -> None:
        while clock() < deadline:
            t0 = clock()
            await operation()
            latencies.append(clock() - t0)

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return latencies, (clock() - begin) / 1e9


async def register_operator(
    client: ChainClient, wallet_key: str, k10: SoftwareK10Signer | None = None
) -> tuple[str, str]:
    """Register a first master device (all roles) for the wallet's operator.

    Returns:
        (operator_omni, device_key_hash), both 64 lowercase hex.
    """
    wallet = account_from_key(wallet_key)
    k10 = k10 or SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=_RP_ID, origin=_ORIGIN)
    master = ch.NewMaster(
        k10_point=k10.public_point,
        k11_credential_id_hash=hashlib.sha256(passkey.credential_id).digest(),
        k11_point=passkey.public_point,
        rp_id_hash=passkey.rp_id_hash,
        roles=_ALL_ROLES,
    )
    mutation = await client.prepare_register_first_master(wallet.address, master, k10, passkey)
    await client.submit(mutation, wallet)
    return actor_omni_for_wallet(wallet.address), k10.device_key_hash.hex()


async def run(profile: Profile) -> list[Row]:
    """Start anvil, deploy, register one operator, then time the reads."""
    rows: list[Row] = []
    async with start_anvil() as anvil, httpx.AsyncClient(timeout=10) as http:
        client = ChainClient(http, anvil.rpc_url)
        accounts = [account_from_key(a.private_key) for a in anvil.accounts]
        deployment = await deploy_all(
            client, accounts[0], governance=[a.address for a in accounts[6:9]], threshold=2
        )
        operator, dkh = await register_operator(client, anvil.accounts[1].private_key)
        agent = agent_omni(operator, "bench")
        cases: dict[str, tuple[str, Callable[[], Awaitable[object]], str | None]] = {
            "rpc-floor": ("eth_blockNumber (JSON-RPC floor)", client.block_number, None),
            "get-device": ("ChainClient.get_device", lambda: client.get_device(dkh), "rpc-floor"),
            "scope-check": (
                "ChainClient.is_service_in_scope",
                lambda: client.is_service_in_scope(operator, agent, "openai"),
                "rpc-floor",
            ),
        }
        if await client.get_device(dkh) is None:
            raise BenchError("the benchmark operator's device did not register")
        for tasks in (1, profile.chain_tasks):
            scenario = "chain seq" if tasks == 1 else f"chain x{tasks}"
            for case, (label, operation, baseline) in cases.items():
                latencies, wall = await _timed(
                    operation, seconds=profile.chain_seconds, tasks=tasks
                )
                rows.append(
                    Row(
                        scenario,
                        case,
                        label,
                        summarise(latencies, seconds=wall),
                        baseline=baseline,
                        notes="anvil, httpx client",
                    )
                )
        rows += await _chain_view_rows(client, deployment, operator, agent, dkh, profile)
    return rows


async def _chain_view_rows(
    client: ChainClient,
    deployment: Deployment,
    operator: str,
    agent: str,
    dkh: str,
    profile: Profile,
) -> list[Row]:
    """A cap mint's three chain reads: direct, through the view uncached, and cached."""
    from agentkeys.broker import CachedChainView

    uncached = CachedChainView(client)
    cached = CachedChainView(client)
    bounded = CachedChainView(client, max_staleness=_STALENESS)
    watchers = [
        ChainWatcher(client.rpc, deployment.addresses, start_block=deployment.block_number)
        for _ in range(2)
    ]

    async def direct_reads() -> object:
        await client.get_device(dkh)
        await client.get_scope(operator, agent)
        return await client.current_epoch()

    def through(view: CachedChainView) -> Callable[[], Awaitable[object]]:
        async def reads() -> object:
            await view.device(dkh)
            await view.scope(operator, agent)
            return await view.epoch()

        return reads

    cases: dict[str, tuple[str, Callable[[], Awaitable[object]], str | None]] = {
        "direct": ("device + scope + epoch, ChainClient", direct_reads, None),
        "uncached": ("same via CachedChainView, not following", through(uncached), "direct"),
        "cached": ("same via CachedChainView, watcher following", through(cached), "direct"),
        "cached-bounded": (
            f"same, following, max_staleness={_STALENESS:g} s",
            through(bounded),
            "direct",
        ),
    }
    views = {"cached": cached, "cached-bounded": bounded}
    rows: list[Row] = []
    async with trio.open_nursery() as nursery:
        for following, watcher in zip(views.values(), watchers, strict=True):
            await nursery.start(partial(following.follow, watcher, poll_interval=_POLL))
            await through(following)()  # fill the cache
        for case, (label, operation, baseline) in cases.items():
            view = views.get(case)
            hits_before, misses_before = (view.hits, view.misses) if view else (0, 0)
            latencies, wall = await _timed(operation, seconds=profile.chain_seconds, tasks=1)
            notes = "one cap mint's reads"
            if view is not None:
                hits, misses = view.hits - hits_before, view.misses - misses_before
                notes += f"; {hits} cache hits, {misses} misses"
            rows.append(
                Row(
                    "broker chain-view",
                    case,
                    label,
                    summarise(latencies, seconds=wall),
                    baseline=baseline,
                    notes=notes,
                )
            )
        nursery.cancel_scope.cancel()
    return rows
