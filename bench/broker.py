"""Scenario ``broker mint``: cap minting over HTTP, chain reads cached vs uncached, replicas.

A real anvil with the contracts and one operator whose master device key we hold;
two brokers (``agentkeys.broker.BrokerService`` on 127.0.0.1, real SQLite store,
real keys, SMTP into the project's sink) against that chain: one whose
:class:`~agentkeys.broker.CachedChainView` follows the chain with the watcher
(``cached``) and one without (``uncached``, the baseline: every mint reads the
device and the epoch with ``eth_call``). The J1 session comes from the broker's own
session issuer (the sign-in stages are not what is measured).

Every mint request carries a fresh K10 PoP (single-use nonce), so the requests are
built and signed before the run and the C load generator sends each exactly once
(``loadgen --requests``). The mint is ``cred-fetch`` by the master for its own
vault: PoP verify, binding, epoch, ES256 cap signature and a mint record in SQLite.

Then the same mints through broker *processes* (``python -m agentkeys.broker``, the
production assembly, :mod:`bench._replicas`) on one PostgreSQL (the devstack's), with the
shared key set in the store and the chain view following with a bounded staleness
(``[chain] cache_staleness``, so a mint makes no RPC): one replica (``pg-1``) and two
(``pg-2``, the clients split evenly between them; its baseline is ``pg-1``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.broker import (
    J1,
    BrokerConfig,
    BrokerKeys,
    BrokerService,
    CachedChainView,
    CapSettings,
    ChainSettings,
    EmailSettings,
    OidcSettings,
    SiteSettings,
    SmtpMailer,
    SqliteStateStore,
    StateSettings,
)
from agentkeys.cap import CapOp
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import Deployment, deploy_all
from agentkeys.chain.signing import SoftwareK10Signer
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.clients.broker import mint_path, mint_request_body
from agentkeys.devstack import pick_port, start_anvil, start_postgres
from agentkeys.devstack.smtp_sink import run_smtp_sink
from agentkeys.pop import PopProof, new_mint_pop_claims, sign_pop
from agentkeys.service import MemoryAudit, ServerSettings
from bench._children import cpu_seconds
from bench._loadgen import LoadResult, build_loadgen, run_loadgen, send_one, write_requests
from bench._model import Figures, Row
from bench._profile import Profile
from bench._replicas import issue_j1, replica_configs, running_replicas
from bench.chain import register_operator
from bench.http import failure_note

__all__ = ["mint_request", "run"]

SCENARIO = "broker mint"
_RP_ID = "agentkeys.localhost"
_ORIGIN = "https://agentkeys.localhost"
_SERVICE = "openai"
_PATH = mint_path(CapOp.FETCH)
_LABELS = {
    "uncached": "POST /v1/cap/cred-fetch, chain reads uncached",
    "cached": "POST /v1/cap/cred-fetch, chain view following",
    "pg-1": "1 broker process on PostgreSQL, chain view following",
    "pg-2": "2 broker processes on PostgreSQL, chain view following",
}
_POLL = 0.2
_STALENESS = 1.0
_PG_NOTE = f"cache_staleness {_STALENESS:g} s"


@dataclass(frozen=True)
class _Operator:
    omni: str
    key: ec.EllipticCurvePrivateKey
    device_key_hash: str


def mint_request(
    *, host: str, j1: str, operator: str, device_key_hash: str, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """One raw HTTP/1.1 cap-mint request with a fresh K10 PoP (master, own vault).

    Raw bytes on purpose: the load generator replays them, so the run measures the broker
    alone; its body comes from :func:`agentkeys.clients.broker.mint_request_body`.
    """
    claims = new_mint_pop_claims(
        op=CapOp.FETCH,
        operator_omni=operator,
        actor_omni=operator,
        service=_SERVICE,
        device_key_hash=device_key_hash,
        now=int(time.time()),
    )
    proof = PopProof(claims.timestamp, claims.nonce, sign_pop(claims, key))
    body = json.dumps(mint_request_body(claims, proof)).encode("ascii")
    head = (
        f"POST {_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {j1}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass(frozen=True)
class _Broker:
    service: BrokerService
    host: str
    port: int


@asynccontextmanager
async def _running_broker(
    client: ChainClient,
    deployment: Deployment,
    state_dir: Path,
    smtp_port: int,
    *,
    follow: bool,
) -> AsyncIterator[_Broker]:
    keys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, state_dir)
    store = await SqliteStateStore.open(state_dir / "broker.sqlite3")
    view = CachedChainView(client)
    follower = None
    if follow:
        watcher = ChainWatcher(
            client.rpc, deployment.addresses, start_block=deployment.block_number
        )
        follower = partial(view.follow, watcher)
    port = pick_port()
    service = BrokerService(
        settings=ServerSettings(port=port),
        site=SiteSettings(
            public_url=f"http://127.0.0.1:{port}",
            rp_id=_RP_ID,
            origin=_ORIGIN,
            chain_id=await client.chain_id(),
        ),
        email=EmailSettings(smtp_port=smtp_port),
        caps=CapSettings(),
        oidc=OidcSettings(),
        keys=keys,
        store=store,
        mailer=SmtpMailer(host="127.0.0.1", port=smtp_port, sender="bench@agentkeys.test"),
        chain=view,
        audit=MemoryAudit(),
        follow=follower,
    )
    try:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(service.serve)
            yield _Broker(service=service, host=bound.host, port=bound.port)
            service.shutdown()
            nursery.cancel_scope.deadline = trio.current_time() + 5
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


def _row(
    case: str,
    result: LoadResult,
    baseline: str | None,
    *,
    note: str = "",
    cpu_us: float | None = None,
) -> Row:
    figures = Figures(
        ops=result.requests,
        seconds=result.duration_s,
        ops_per_s=result.rps,
        p50_us=result.p50_us,
        p90_us=result.p90_us,
        p99_us=result.p99_us,
    )
    notes = ["one PoP-signed request each"] + ([note] if note else [])
    if result.exhausted:
        notes.append("ran out of pre-built requests")
    if failure := failure_note(result):
        notes.append(failure)
    extra: dict[str, float | int | str] = {
        "errors": result.errors,
        "non_2xx": result.non_2xx,
        "timeouts": result.timeouts,
        "exhausted": int(result.exhausted),
    }
    if cpu_us is not None:
        notes.append(f"broker CPU {cpu_us:,.0f} µs/mint")
        extra["broker_cpu_us_per_mint"] = round(cpu_us, 1)
    return Row(
        f"{SCENARIO} c={result.conns}",
        case,
        _LABELS[case],
        figures,
        baseline=baseline,
        notes="; ".join(notes),
        extra=extra,
    )


def _requests(operator: _Operator, *, host: str, j1: str, count: int) -> list[bytes]:
    return [
        mint_request(
            host=host, j1=j1, operator=operator.omni, device_key_hash=operator.device_key_hash,
            key=operator.key,
        )
        for _ in range(count)
    ]  # fmt: skip


def _together(results: list[LoadResult]) -> LoadResult:
    """One result from load generators that ran at the same time against several replicas:
    summed clients, counts and rates; the slowest percentiles."""
    return LoadResult(
        conns=sum(r.conns for r in results),
        duration_s=max(r.duration_s for r in results),
        requests=sum(r.requests for r in results),
        completed=sum(r.completed for r in results),
        rps=sum(r.rps for r in results),
        p50_us=max(r.p50_us for r in results),
        p90_us=max(r.p90_us for r in results),
        p99_us=max(r.p99_us for r in results),
        max_us=max(r.max_us for r in results),
        errors=sum(r.errors for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        reconnects=sum(r.reconnects for r in results),
        timeouts=sum(r.timeouts for r in results),
        exhausted=any(r.exhausted for r in results),
        first_bad_status=next((r.first_bad_status for r in results if r.first_bad_status), 0),
    )


async def _load_together(
    binary: Path, profile: Profile, loads: list[tuple[int, int, Path]]
) -> LoadResult:
    """One load generator per (port, clients, requests file), all at once (:func:`_together`)."""
    runs: list[LoadResult] = []

    async def drive(port: int, conns: int, path: Path) -> None:
        result = await run_loadgen(
            binary, tcp=("127.0.0.1", port), conns=conns, duration=profile.mint_seconds,
            warmup=profile.mint_warmup, requests_file=path,
        )  # fmt: skip
        runs.append(result)

    async with trio.open_nursery() as nursery:
        for port, conns, path in loads:
            nursery.start_soon(drive, port, conns, path)
    return _together(runs)


async def _in_process_rows(
    profile: Profile, binary: Path, private: Path, env: _Env
) -> dict[int, dict[str, LoadResult]]:
    results: dict[int, dict[str, LoadResult]] = {}
    for case in ("uncached", "cached"):
        state = private / case
        state.mkdir(mode=0o700)
        async with _running_broker(
            env.client, env.deployment, state, env.smtp_port, follow=case == "cached"
        ) as broker:
            j1, _ = await broker.service.sessions.issue(
                stage=J1,
                subject=env.operator.omni,
                now=int(time.time()),
                lifetime=600,
                extra={"wallet": env.wallet},
            )
            host = f"{broker.host}:{broker.port}"
            await send_one(  # fail fast, with the broker's reason, if a mint is refused
                f"http://{host}", _requests(env.operator, host=host, j1=j1, count=1)[0]
            )
            for conns in profile.mint_clients:
                requests_path = private / f"requests-{case}-{conns}"
                write_requests(
                    requests_path,
                    _requests(env.operator, host=host, j1=j1, count=profile.mint_requests),
                )
                results.setdefault(conns, {})[case] = await run_loadgen(
                    binary,
                    tcp=(broker.host, broker.port),
                    conns=conns,
                    duration=profile.mint_seconds,
                    warmup=profile.mint_warmup,
                    requests_file=requests_path,
                )
    return results


async def _replica_rows(
    profile: Profile, binary: Path, private: Path, env: _Env, cpu: dict[int, dict[str, float]]
) -> dict[int, dict[str, LoadResult]]:
    """Mints through 1 and 2 broker processes on one PostgreSQL (module docstring); the
    brokers' CPU time per mint (all replicas together) goes into ``cpu``."""
    results: dict[int, dict[str, LoadResult]] = {}
    async with start_postgres(run_dir=private / "postgres") as postgres:
        for count in (1, 2):
            case = f"pg-{count}"
            dsn = await postgres.create_database(f"bench_{count}")
            base = BrokerConfig(
                broker=ServerSettings(),
                state=StateSettings(dir=private / case),
                site=SiteSettings(
                    public_url="http://127.0.0.1", rp_id=_RP_ID, origin=_ORIGIN,
                    chain_id=await env.client.chain_id(),
                ),
                chain=ChainSettings(
                    rpc_url=env.rpc_url, deployment=env.record, poll_interval=_POLL,
                    cache_staleness=_STALENESS,
                ),
                email=EmailSettings(smtp_port=env.smtp_port),
            )  # fmt: skip
            configs = replica_configs(
                base, count=count, directory=private / case, dsn=dsn,
                password_file=postgres.password_file,
            )  # fmt: skip
            async with running_replicas(configs, private / case) as children:
                j1 = await issue_j1(configs[0], subject=env.operator.omni, wallet=env.wallet)
                for child in children:
                    request = _requests(
                        env.operator, host=f"127.0.0.1:{child.port}", j1=j1, count=1
                    )
                    await send_one(f"http://127.0.0.1:{child.port}", request[0])
                await trio.sleep(2 * _POLL)  # the first mint's misses are cached by now
                for conns in profile.mint_clients:
                    per_replica = [conns // count + (i < conns % count) for i in range(count)]
                    loads = []
                    for child, n in zip(children, per_replica, strict=True):
                        if n:
                            path = private / case / f"requests-{child.port}-{conns}"
                            host = f"127.0.0.1:{child.port}"
                            built = _requests(
                                env.operator, host=host, j1=j1, count=profile.mint_requests
                            )
                            write_requests(path, built)
                            loads.append((child.port, n, path))
                    before = sum(cpu_seconds(child.pid) for child in children)
                    result = await _load_together(binary, profile, loads)
                    used = sum(cpu_seconds(child.pid) for child in children) - before
                    results.setdefault(conns, {})[case] = result
                    cpu[conns][case] = used * 1e6 / max(1, result.completed)
    return results


@dataclass(frozen=True)
class _Env:
    client: ChainClient
    deployment: Deployment
    record: Path
    rpc_url: str
    smtp_port: int
    operator: _Operator
    wallet: str


async def run(profile: Profile, *, build_dir: Path) -> list[Row]:
    """Start anvil, the contracts and an operator; drive cap mints through two in-process
    brokers, then through one and two broker processes on PostgreSQL."""
    binary = await build_loadgen(build_dir)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentkeys-bench-") as tmp:
        private = Path(tmp)
        os.chmod(private, 0o700)
        async with (
            start_anvil() as anvil,
            httpx.AsyncClient(trust_env=False, timeout=10) as rpc_http,
            run_smtp_sink() as smtp,
        ):
            client = ChainClient(rpc_http, anvil.rpc_url)
            accounts = [account_from_key(a.private_key) for a in anvil.accounts]
            record = private / "deployment.json"
            deployment = await deploy_all(
                client, accounts[0], governance=[accounts[0].address], threshold=1,
                record_path=record,
            )  # fmt: skip
            key = ec.generate_private_key(ec.SECP256R1())
            omni, dkh = await register_operator(
                client, anvil.accounts[1].private_key, SoftwareK10Signer(key)
            )
            env = _Env(
                client=client, deployment=deployment, record=record, rpc_url=anvil.rpc_url,
                smtp_port=smtp.port, operator=_Operator(omni=omni, key=key, device_key_hash=dkh),
                wallet=accounts[1].address.lower(),
            )  # fmt: skip
            results = await _in_process_rows(profile, binary, private, env)
            cpu: dict[int, dict[str, float]] = {conns: {} for conns in results}
            replicas = await _replica_rows(profile, binary, private, env, cpu)
            for conns, by_case in replicas.items():
                results[conns].update(by_case)
    split = "clients split evenly between the replicas"
    for conns, by_case in results.items():
        rows.append(_row("uncached", by_case["uncached"], None))
        rows.append(_row("cached", by_case["cached"], "uncached"))
        for case, baseline, note in (
            ("pg-1", "uncached", _PG_NOTE),
            ("pg-2", "pg-1", f"{_PG_NOTE}; {split}"),
        ):
            rows.append(_row(case, by_case[case], baseline, note=note, cpu_us=cpu[conns][case]))
    return rows
