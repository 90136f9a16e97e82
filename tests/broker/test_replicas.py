"""Three broker processes on one PostgreSQL behave as one broker.

Each replica is ``python -m agentkeys.broker --config FILE`` (real Hypercorn, its own
interpreter, :mod:`bench._replicas`) with ``[state] backend = postgres`` on one database of
the devstack's PostgreSQL and the shared key set in it; they share one public URL (the
session and OIDC issuer) as replicas behind a load balancer do. What one replica spends,
follows, counts or revokes, every other sees at its next request: PoP nonces (also when one
request reaches all three at once), email links, passkey sign counts and sessions; and they
publish and sign with one key set. The rotation of that set against a real worker is in
``tests/faults/test_replica_rotation.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agentkeys.broker.config import (
    BrokerConfig,
    ChainSettings,
    EmailSettings,
    KeySettings,
    SiteSettings,
    StateSettings,
)
from agentkeys.cap import verify_cap
from agentkeys.chain.signing import SoftwareK10Signer
from agentkeys.devstack import Postgres
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.jwks import JsonWebKeySet
from agentkeys.service import ServerSettings
from bench._children import Child
from bench._replicas import issue_j1, replica_configs, running_replicas
from bench.broker import mint_request
from bench.chain import register_operator
from tests.broker._flow import (
    BrokerClient,
    bearer,
    email_stage,
    enroll,
    post_siwe,
    request_link,
    siwe_attempt,
    siwe_start,
)
from tests.broker.conftest import ORIGIN, RP_ID, Chain, Device

COUNT = 3
EMAIL = "replica@example.org"


@dataclass
class Replicas:
    configs: list[BrokerConfig]
    children: list[Child]
    clients: list[BrokerClient]
    chain: Chain
    operator: str
    wallet: str
    device_key_hash: str
    k10: ec.EllipticCurvePrivateKey

    async def j1(self) -> str:
        return await issue_j1(self.configs[0], subject=self.operator, wallet=self.wallet)

    def mint(self, j1: str) -> tuple[dict[str, str], bytes]:
        """(headers, body) of one cap mint with a fresh PoP (master, own vault)."""
        raw = mint_request(
            host="broker", j1=j1, operator=self.operator,
            device_key_hash=self.device_key_hash, key=self.k10,
        )  # fmt: skip
        head, body = raw.split(b"\r\n\r\n", 1)
        lines = head.decode("ascii").split("\r\n")[1:]
        headers = dict(line.split(": ", 1) for line in lines)
        for name in ("Host", "Content-Length"):
            headers.pop(name)
        return headers, body


def base_config(chain: Chain, record: Path, smtp: SmtpSink) -> BrokerConfig:
    return BrokerConfig(
        broker=ServerSettings(),
        state=StateSettings(dir=Path("/nonexistent")),  # each replica gets its own
        site=SiteSettings(
            public_url="http://127.0.0.1", rp_id=RP_ID, origin=ORIGIN,
            chain_id=chain.anvil.chain_id,
        ),
        chain=ChainSettings(rpc_url=chain.anvil.rpc_url, deployment=record, poll_interval=0.1),
        email=EmailSettings(smtp_host=str(smtp.host), smtp_port=int(smtp.port)),
        keys=KeySettings(refresh_interval=0.2, publish_lead=5),
    )  # fmt: skip


@pytest.fixture
async def replicas(
    chain: Chain, smtp: SmtpSink, postgres: Postgres, postgres_database: str, tmp_path: Path
) -> AsyncIterator[Replicas]:
    record = tmp_path / "deployment.json"
    chain.deployment.write(record)
    k10 = ec.generate_private_key(ec.SECP256R1())
    wallet = chain.accounts[1]
    operator, dkh = await register_operator(chain.client, wallet.key.hex(), SoftwareK10Signer(k10))
    configs = replica_configs(
        base_config(chain, record, smtp), count=COUNT, directory=tmp_path / "replicas",
        dsn=postgres_database, password_file=postgres.password_file,
    )  # fmt: skip
    async with running_replicas(configs, tmp_path / "replicas") as children:
        clients = [
            BrokerClient(httpx.AsyncClient(base_url=c.url, trust_env=False, timeout=30))
            for c in children
        ]
        try:
            yield Replicas(
                configs, children, clients, chain, operator, wallet.address.lower(), dkh, k10
            )
        finally:
            for client in clients:
                await client.http.aclose()


def _error(response: httpx.Response) -> str:
    return str(response.json()["error"])


async def _at_once(
    replicas: Replicas, headers: dict[str, str], body: bytes
) -> list[httpx.Response]:
    """The same mint request sent to every replica at the same moment."""
    responses: list[httpx.Response] = []
    go = trio.Event()

    async def send(client: BrokerClient) -> None:
        await go.wait()
        responses.append(
            await client.http.post("/v1/cap/cred-fetch", content=body, headers=headers)
        )

    async with trio.open_nursery() as nursery:
        for client in replicas.clients:
            nursery.start_soon(send, client)
        await trio.testing.wait_all_tasks_blocked()
        go.set()
    return responses


async def test_a_pop_nonce_is_spent_once_across_replicas(replicas: Replicas) -> None:
    j1 = await replicas.j1()
    first, *others = replicas.clients
    headers, body = replicas.mint(j1)
    assert (await first.http.post("/v1/cap/cred-fetch", content=body, headers=headers)).is_success
    for client in others:
        again = await client.http.post("/v1/cap/cred-fetch", content=body, headers=headers)
        assert again.status_code == 401
        assert _error(again) == "replayed_nonce", again.text
    for _ in range(5):  # one request reaching every replica at once: exactly one mints
        responses = await _at_once(replicas, *replicas.mint(j1))
        assert sorted(r.status_code for r in responses) == [200, 401, 401]
        assert {_error(r) for r in responses if r.status_code == 401} == {"replayed_nonce"}


async def test_an_email_link_followed_on_another_replica_signs_in(
    replicas: Replicas, smtp: SmtpSink
) -> None:
    a, b, c = replicas.clients
    handle, link = await request_link(a, smtp, EMAIL)
    assert (await a.http.post("/v1/auth/email/poll", json={"request": handle})).status_code == 202
    path = httpx.URL(link).copy_with(scheme=None, host=None, port=None)
    assert (await b.http.get(str(path))).status_code == 200  # the link, opened on B
    again = await c.http.get(str(path))
    assert again.status_code == 401  # used once, whichever replica sees it next
    assert _error(again) == "email_token_invalid"
    polled = await a.http.post("/v1/auth/email/poll", json={"request": handle})
    assert polled.status_code == 200, polled.text
    j0 = polled.json()["session"]
    for client in replicas.clients:
        info = await client.http.get("/v1/auth/session", headers=bearer(j0))
        assert info.status_code == 200, info.text
    collected = await c.http.post("/v1/auth/email/poll", json={"request": handle})
    assert collected.status_code == 404  # collected once
    assert _error(collected) == "email_request_unknown"


async def test_a_passkey_sign_count_never_goes_back_across_replicas(
    replicas: Replicas, smtp: SmtpSink
) -> None:
    a, b, c = replicas.clients
    wallet: LocalAccount = Account.create()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    await enroll(a, await email_stage(a, smtp, EMAIL), Device.generate(), passkey)
    for client in (b, c, a):  # each sign-in on another replica raises the stored count
        j0 = await email_stage(client, smtp, EMAIL)  # a sign-in spends its J0
        start = await siwe_start(client, j0)
        response = await post_siwe(client, j0, siwe_attempt(start, wallet, passkey))
        assert response.status_code == 200, response.text
    assert passkey.sign_count == 3
    j0 = await email_stage(b, smtp, EMAIL)
    for client in replicas.clients:  # the last count, or any earlier one, on any replica
        for count in (3, 2):
            start = await siwe_start(client, j0)
            replay = siwe_attempt(start, wallet, passkey, assertion_options={"sign_count": count})
            response = await post_siwe(client, j0, replay)
            assert response.status_code == 401
            assert _error(response) == "passkey_sign_count_replayed"
    start = await siwe_start(c, j0)  # the next count is accepted
    assert (await post_siwe(c, j0, siwe_attempt(start, wallet, passkey))).status_code == 200


async def test_a_session_revoked_on_one_replica_is_refused_by_all(replicas: Replicas) -> None:
    j1 = await replicas.j1()
    for client in replicas.clients:
        assert (await client.http.get("/v1/auth/session", headers=bearer(j1))).status_code == 200
    revoked = await replicas.clients[1].http.post("/v1/auth/session/revoke", headers=bearer(j1))
    assert revoked.status_code == 200, revoked.text
    for client in replicas.clients:
        info = await client.http.get("/v1/auth/session", headers=bearer(j1))
        assert info.status_code == 401
        assert _error(info) == "session_revoked"
        headers, body = replicas.mint(j1)
        mint = await client.http.post("/v1/cap/cred-fetch", content=body, headers=headers)
        assert mint.status_code == 401
        assert _error(mint) == "session_revoked"


async def _jwks(client: BrokerClient, path: str) -> dict[str, Any]:
    response = await client.http.get(path)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_every_replica_publishes_and_signs_with_one_key_set(replicas: Replicas) -> None:
    for path in ("/v1/cap/jwks.json", "/.well-known/jwks.json"):  # K1, K2 (and the signer's)
        published = [await _jwks(client, path) for client in replicas.clients]
        assert published[0]["keys"]
        assert all(p == published[0] for p in published)
    cap_keys = JsonWebKeySet.from_json(
        (await replicas.clients[2].http.get("/v1/cap/jwks.json")).content
    )
    j1 = await replicas.j1()
    kids = set()
    for client in replicas.clients:  # a cap minted by any replica verifies against C's JWKS
        headers, body = replicas.mint(j1)
        minted = await client.http.post("/v1/cap/cred-fetch", content=body, headers=headers)
        assert minted.status_code == 200, minted.text
        verified = verify_cap(
            minted.json()["token"], keys=cap_keys.by_kid, expected_aud="agentkeys-worker",
            now=time.time(),
        )  # fmt: skip
        assert verified.payload.operator_omni == replicas.operator
        kids.add(verified.kid)
    assert len(kids) == 1
