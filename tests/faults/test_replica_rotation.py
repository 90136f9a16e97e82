"""Rotating the shared cap key of three broker replicas leaves no window at a real worker.

The process stack with the broker as three ``python -m agentkeys.broker`` replicas on one
PostgreSQL (the shared key set in the store) and the real worker process, whose cap JWKS
comes from replica 0. Caps are minted on every replica before, during and after
``python -m agentkeys.broker rotate-key --purpose cap`` run against replica 1's
configuration, and each is presented at once to the worker: every one fetches the stored
credential. The new key is published on every replica before any signs with it
(``[keys] publish_lead``, shortened here; it must exceed the worker's refetch interval for
unknown kids, 10 s), and in the end every replica signs with it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import trio

from agentkeys.b64url import b64url_decode
from agentkeys.broker.config import KeySettings
from agentkeys.cap import CapOp, cap_digest, parse_cap_token
from agentkeys.devstack import Postgres
from agentkeys.pop import PopProof, new_worker_pop_claims, sign_pop
from bench._replicas import issue_j1
from bench.broker import mint_request
from tests.faults._stack import ProcessStack, process_stack, store_credentials

SERVICE = "openai"  # bench.broker.mint_request mints for it
LEAD = 12


async def _mint(stack: ProcessStack, url: str, j1: str) -> str:
    """A fetch cap minted by the broker at ``url`` (fresh K10 PoP)."""
    raw = mint_request(
        host="broker", j1=j1, operator=stack.signing.operator,
        device_key_hash=stack.signing.device_key_hash, key=stack.signing.k10,
    )  # fmt: skip
    head, body = raw.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode("ascii").split("\r\n")[1:])
    del headers["Host"], headers["Content-Length"]
    response = await stack.http.post(f"{url}/v1/cap/cred-fetch", content=body, headers=headers)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def _fetch(stack: ProcessStack, token: str) -> httpx.Response:
    """Present ``token`` at the worker with a fresh PoP over its digest."""
    digest = cap_digest(parse_cap_token(token).payload)
    claims = new_worker_pop_claims(
        cap_digest=digest, op=CapOp.FETCH, body=b"{}", now=int(time.time())
    )
    proof = PopProof(claims.timestamp, claims.nonce, sign_pop(claims, stack.signing.k10))
    return await stack.http.post(
        f"{stack.worker.url}/v1/cred/fetch",
        content=b"{}",
        headers={
            "Authorization": f"Cap {token}",
            "Agentkeys-Pop": proof.to_header_value(),
            "Content-Type": "application/json",
        },
    )


async def _published(stack: ProcessStack) -> list[set[str]]:
    """The kids of the cap JWKS each replica publishes."""
    published = []
    for broker in stack.brokers:
        response = await stack.http.get(f"{broker.url}/v1/cap/jwks.json")
        assert response.status_code == 200, response.text
        published.append({key["kid"] for key in response.json()["keys"]})
    return published


async def test_a_cap_key_rotation_has_no_window_at_the_worker(
    tmp_path: Path, postgres: Postgres
) -> None:
    keys = KeySettings(refresh_interval=0.2, publish_lead=LEAD)
    async with process_stack(tmp_path / "s", postgres=postgres, replicas=3, keys=keys) as stack:
        secret = (await store_credentials(stack, [SERVICE]))[SERVICE]
        j1 = await issue_j1(
            stack.broker_configs[0], subject=stack.signing.operator, wallet=stack.signing.wallet
        )

        async def round_trip() -> set[str]:
            """Mint on every replica, fetch with each cap at the worker; the kids used."""
            kids = set()
            for broker in stack.brokers:
                token = await _mint(stack, broker.url, j1)
                fetched = await _fetch(stack, token)
                assert fetched.status_code == 200, (broker.name, fetched.text)
                assert b64url_decode(fetched.json()["credential"]) == secret
                kids.add(parse_cap_token(token).kid)
            return kids

        old = await round_trip()
        assert len(old) == 1
        rotated = await trio.run_process(
            [sys.executable, "-m", "agentkeys.broker", "rotate-key",
             "--config", str(stack.brokers[1].config), "--purpose", "cap"],
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        rotation = json.loads(rotated.stdout)
        assert rotation["source"] == "store"
        new_kid = rotation["kid"]
        assert new_kid not in old
        with trio.fail_after(5):  # every replica publishes it within a refresh, before it signs
            # what a replica publishes is only observable over HTTP: poll it
            while not all(new_kid in kids for kids in await _published(stack)):  # noqa: ASYNC110
                await trio.sleep(0.2)
        assert time.time() < rotation["activates_at"]
        seen: list[set[str]] = []
        while time.time() < rotation["activates_at"] + 3:  # before, across and after the switch
            seen.append(await round_trip())
            await trio.sleep(0.3)
        assert seen[0] == old
        assert seen[-1] == {new_kid}  # every replica signs with it now
        assert all(kids <= old | {new_kid} for kids in seen)
