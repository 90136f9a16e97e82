"""The ``dev up`` stack for the worker and sidecar scenarios, and requests against it.

:func:`running_dev_stack` runs ``agentkeys.devstack.up.run_dev_stack`` (anvil + contracts, the
development PKI, SeaweedFS with STS, the signer over mutual TLS, the broker, the worker)
in a private directory without swtpm, registers one operator whose master K10 key we
hold (sovereign, a fresh wallet funded by anvil) and stops everything on exit.

Two shortcuts, both around what the scenarios measure rather than inside it:

* worker caps are signed with the broker's own active K1 key, read from the stack's
  state directory (the worker trusts the broker's published JWKS);
* the operator's J1 session is issued by the broker's own session issuer (its session
  key and its state store), as the broker and daemon tests do, instead of walking the
  email / passkey / SIWE sign-in stages.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_encode
from agentkeys.cap import CapOp, cap_digest, new_cap_payload, sign_cap
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.chain.signing import SoftwareK10Signer
from agentkeys.clients.worker import worker_path, worker_request_headers
from agentkeys.pop import PopProof, new_worker_pop_claims, sign_pop
from bench._errors import BenchError
from bench.chain import register_operator

__all__ = [
    "DevStack",
    "Signing",
    "key_pem",
    "running_dev_stack",
    "worker_request",
]

AUDIENCE = "agentkeys-worker"
_STACK_TIMEOUT = 120.0


@dataclass(frozen=True)
class Signing:
    """What worker requests are built from: the cap key and the operator's device."""

    k1: ec.EllipticCurvePrivateKey
    kid: str
    operator: str
    wallet: str
    device_key_hash: str
    k10: ec.EllipticCurvePrivateKey
    epoch: int


@dataclass(frozen=True)
class DevStack:
    """A running dev stack with its operator."""

    state_dir: Path
    rpc_url: str
    deployment_record: Path
    broker_url: str
    worker_url: str
    signing: Signing

    @property
    def worker_address(self) -> tuple[str, int]:
        """(host, port) of the worker."""
        host, port = self.worker_url.split("//", 1)[1].rsplit(":", 1)
        return host, int(port)


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """``key`` as an unencrypted PKCS#8 PEM: the software K10 backend's key file."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def worker_request(signing: Signing, op: CapOp, *, host: str, service: str, secret: bytes) -> bytes:
    """One raw HTTP/1.1 worker request with a fresh cap and a fresh K10 PoP over its body.

    Raw bytes on purpose: the load generator replays them, so the run measures the worker
    alone; its headers come from :func:`agentkeys.clients.worker.worker_request_headers`.

    ``secret`` is the credential a ``store`` writes (ignored by ``fetch``).
    """
    body = (
        json.dumps({"credential": b64url_encode(secret)}).encode() if op is CapOp.STORE else b"{}"
    )
    payload = new_cap_payload(
        op=op,
        operator_omni=signing.operator,
        actor_omni=signing.operator,
        service=service,
        device_key_hash=signing.device_key_hash,
        k3_epoch=signing.epoch,
        aud=AUDIENCE,
        now=int(time.time()),
    )
    token = sign_cap(payload, signing.k1, signing.kid).to_token()
    claims = new_worker_pop_claims(
        cap_digest=cap_digest(payload), op=op, body=body, now=int(time.time())
    )
    proof = PopProof(claims.timestamp, claims.nonce, sign_pop(claims, signing.k10))
    fields = "".join(f"{k}: {v}\r\n" for k, v in worker_request_headers(token, proof).items())
    head = (
        f"POST {worker_path(op)} HTTP/1.1\r\nHost: {host}\r\n{fields}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _operator(
    state_dir: Path, rpc_url: str, record: Path, http: httpx.AsyncClient
) -> Signing:
    from agentkeys.broker import BrokerKeys

    deployment = read_deployment_record(record)
    client = ChainClient(http, rpc_url, deployment.addresses)
    wallet_key = os.urandom(32).hex()  # a fresh wallet, funded by anvil for its one tx
    wallet = account_from_key(wallet_key)
    await client.rpc.call("anvil_setBalance", wallet.address, hex(10**20))
    k10 = ec.generate_private_key(ec.SECP256R1())
    operator, dkh = await register_operator(client, wallet_key, SoftwareK10Signer(k10))
    keys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, state_dir / "broker" / "state")
    return Signing(
        k1=keys.cap.active,
        kid=keys.cap.active_kid,
        operator=operator,
        wallet=wallet.address.lower(),
        device_key_hash=dkh,
        k10=k10,
        epoch=await client.current_epoch(),
    )


@asynccontextmanager
async def running_dev_stack(directory: Path) -> AsyncIterator[DevStack | None]:
    """Run the dev stack under ``directory`` (private); None when it has no worker.

    Raises:
        BenchError: ``agentkeys.devstack.up`` is missing (callers check importability first).
    """
    try:
        from agentkeys.devstack.up import DevUpOptions, run_dev_stack
    except ImportError as exc:
        raise BenchError("agentkeys.devstack.up is not importable") from exc
    stack: DevStack | None = None
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(timeout=15, trust_env=False) as http,
    ):
        with trio.fail_after(_STACK_TIMEOUT):
            status = await nursery.start(
                run_dev_stack, DevUpOptions(state_dir=directory / "stack", swtpm=False)
            )
        components = status.components
        worker_url = components.get("worker", {}).get("url")
        broker_url = components.get("broker", {}).get("url")
        if worker_url and broker_url:
            rpc_url = components["anvil"]["url"]
            record = Path(components["contracts"]["record"])
            state_dir = Path(status.state_dir)
            stack = DevStack(
                state_dir=state_dir,
                rpc_url=rpc_url,
                deployment_record=record,
                broker_url=broker_url,
                worker_url=worker_url,
                signing=await _operator(state_dir, rpc_url, record, http),
            )
            yield stack
        nursery.cancel_scope.cancel()
    if stack is None:
        yield None
