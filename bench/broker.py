"""Scenario ``broker mint``: cap minting over HTTP, chain reads cached vs uncached.

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
    BrokerKeys,
    BrokerService,
    CachedChainView,
    CapSettings,
    EmailSettings,
    OidcSettings,
    SiteSettings,
    SmtpMailer,
    SqliteStateStore,
)
from agentkeys.cap import CapOp
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import Deployment, deploy_all
from agentkeys.chain.signing import SoftwareK10Signer
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.clients.broker import mint_path, mint_request_body
from agentkeys.devstack import pick_port, start_anvil
from agentkeys.devstack.smtp_sink import run_smtp_sink
from agentkeys.pop import PopProof, new_mint_pop_claims, sign_pop
from agentkeys.service import MemoryAudit, ServerSettings
from bench._errors import BenchError
from bench._loadgen import LoadResult, build_loadgen, run_loadgen, write_requests
from bench._model import Figures, Row
from bench._profile import Profile
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
}


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


def _row(case: str, result: LoadResult, baseline: str | None) -> Row:
    figures = Figures(
        ops=result.requests,
        seconds=result.duration_s,
        ops_per_s=result.rps,
        p50_us=result.p50_us,
        p90_us=result.p90_us,
        p99_us=result.p99_us,
    )
    notes = ["one PoP-signed request each"]
    if result.exhausted:
        notes.append("ran out of pre-built requests")
    if failure := failure_note(result):
        notes.append(failure)
    return Row(
        f"{SCENARIO} c={result.conns}",
        case,
        _LABELS[case],
        figures,
        baseline=baseline,
        notes="; ".join(notes),
        extra={
            "errors": result.errors,
            "non_2xx": result.non_2xx,
            "timeouts": result.timeouts,
            "exhausted": int(result.exhausted),
        },
    )


async def _check_one_mint(broker: _Broker, request: bytes) -> None:
    """Fail fast, with the broker's reason, if a mint built like the run's is refused."""
    head, body = request.split(b"\r\n\r\n", 1)
    headers = dict(
        line.split(": ", 1) for line in head.decode("ascii").split("\r\n")[1:] if ": " in line
    )
    headers.pop("Content-Length", None)
    url = f"http://{broker.host}:{broker.port}{_PATH}"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.post(url, content=body, headers=headers)
    if response.status_code != 200:
        raise BenchError(f"the broker refused the benchmark mint: {response.text[:300]}")


async def run(profile: Profile, *, build_dir: Path) -> list[Row]:
    """Start anvil, the contracts, an operator and two brokers; drive cap mints."""
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
            deployment = await deploy_all(
                client, accounts[0], governance=[accounts[0].address], threshold=1
            )
            key = ec.generate_private_key(ec.SECP256R1())
            omni, dkh = await register_operator(
                client, anvil.accounts[1].private_key, SoftwareK10Signer(key)
            )
            operator = _Operator(omni=omni, key=key, device_key_hash=dkh)
            results: dict[int, dict[str, LoadResult]] = {}
            for case in ("uncached", "cached"):
                state = private / case
                state.mkdir(mode=0o700)
                async with _running_broker(
                    client, deployment, state, smtp.port, follow=case == "cached"
                ) as broker:
                    j1, _ = await broker.service.sessions.issue(
                        stage=J1,
                        subject=operator.omni,
                        now=int(time.time()),
                        lifetime=600,
                        extra={"wallet": accounts[1].address.lower()},
                    )

                    def build(count: int, broker: _Broker = broker, j1: str = j1) -> list[bytes]:
                        return [
                            mint_request(
                                host=f"{broker.host}:{broker.port}",
                                j1=j1,
                                operator=operator.omni,
                                device_key_hash=operator.device_key_hash,
                                key=operator.key,
                            )
                            for _ in range(count)
                        ]

                    await _check_one_mint(broker, build(1)[0])
                    for conns in (1, profile.chain_tasks):
                        requests_path = private / f"requests-{case}-{conns}"
                        write_requests(requests_path, build(profile.mint_requests))
                        results.setdefault(conns, {})[case] = await run_loadgen(
                            binary,
                            tcp=(broker.host, broker.port),
                            conns=conns,
                            duration=profile.http_duration,
                            warmup=profile.http_warmup,
                            requests_file=requests_path,
                        )
            for by_case in results.values():
                rows.append(_row("uncached", by_case["uncached"], None))
                rows.append(_row("cached", by_case["cached"], "uncached"))
    return rows
