"""The worker's real stack: anvil + contracts, SeaweedFS with STS and the deploy/aws policies,
the signer over mTLS, an OIDC issuer document server, and the worker behind either front end.

* The chain runs the agentkeys contracts (one governance member, threshold 1, so tests can
  advance the K3 epoch). The operator's master wallet is the signer-held K4 of an email
  identity (as every v1 wallet was), registered in sovereign mode.
* SeaweedFS gets the IAM document generated from deploy/aws (``agentkeys.devstack.deployed_iam``).
* Caps are signed with a test K1 key (the real cap format) trusted by the worker through a
  configured JWKS; the broker is not needed for the worker's checks.
* The chain, PKI, signer and OIDC issuer helpers come from tests/services.py.
* ``frontend`` is parametrised: the Hypercorn microservice over a real socket, and the Lambda
  handler invoked in-process (in a thread, with its own Trio loop) with API Gateway events.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account.signers.local import LocalAccount

from agentkeys.b64url import b64url_encode
from agentkeys.cap import CapOp, CapPayload, cap_digest, new_cap_payload, sign_cap
from agentkeys.chain.challenge import NewAgent, NewMaster
from agentkeys.chain.client import account_from_key
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.clients.signer import SignerClient
from agentkeys.devstack import (
    SeaweedFS,
    start_seaweedfs,
)
from agentkeys.devstack.deployed_iam import deployed_iam_config
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.jwks import JsonWebKeySet
from agentkeys.legacy_s3 import (
    DEPRECATION_MESSAGE,
    EnvelopeChoice,
    LegacyS3Backend,
    SignerStsCredentials,
)
from agentkeys.omni import actor_omni_for_wallet, agent_omni, identity_omni
from agentkeys.pop import PopProof, new_worker_pop_claims, sign_pop
from agentkeys.service import (
    BoundAddress,
    MemoryAudit,
    ServerSettings,
)
from agentkeys.wallet import derive_k4_private_key
from agentkeys.worker import StaticCapKeys, StorageSettings, WorkerCore, WorkerService
from agentkeys.worker import _lambda as worker_lambda
from agentkeys.worker.errors import StorageDenied
from tests.service.conftest import Pki
from tests.services import (
    Chain,
    Issuer,
    RunningSigner,
    serve_issuer,
    start_sts_signer,
    vector_master_secret,
)
from tests.services import chain as chain
from tests.services import pki as pki
from tests.stack_fixtures import TEST_BUCKET

SHARED_FIXTURES = (chain, pki)  # tests/services.py's fixtures, registered here (and re-exported)

AUDIENCE = "agentkeys-worker-test"
RP_ID = "agentkeys.localhost"
ORIGIN = "https://agentkeys.localhost"
ALL_ROLES = 7
_LIMITER = trio.CapacityLimiter(2)


@dataclass
class Device:
    """A registered device: its K10 key and the (operator, actor) it is bound to."""

    key: ec.EllipticCurvePrivateKey
    operator_omni: str
    actor_omni: str

    @property
    def k10(self) -> SoftwareK10Signer:
        return SoftwareK10Signer(self.key)

    @property
    def device_key_hash(self) -> str:
        return self.k10.device_key_hash.hex()


@dataclass
class Operator:
    """An operator whose master wallet is the K4 wallet of an email identity."""

    email: str
    wallet: LocalAccount
    master: Device
    passkey: SoftAuthenticator

    @property
    def omni(self) -> str:
        return actor_omni_for_wallet(self.wallet.address)

    @property
    def identity_omni(self) -> str:
        return identity_omni("email", self.email)

    @property
    def wallet_address(self) -> str:
        return self.wallet.address.lower()

    @property
    def authority(self) -> MasterAuthority:
        return MasterAuthority(self.master.k10.device_key_hash, self.master.k10, self.passkey)


async def register_operator(chain: Chain, email: str) -> Operator:
    identity = identity_omni("email", email)
    wallet = account_from_key(derive_k4_private_key(vector_master_secret(), identity))
    await chain.client.rpc.call("anvil_setBalance", wallet.address, hex(10**20))
    key = ec.generate_private_key(ec.SECP256R1())
    k10 = SoftwareK10Signer(key)
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    device = NewMaster(
        k10_point=k10.public_point,
        k11_credential_id_hash=hashlib.sha256(passkey.credential_id).digest(),
        k11_point=passkey.public_point,
        rp_id_hash=passkey.rp_id_hash,
        roles=ALL_ROLES,
    )
    mutation = await chain.client.prepare_register_first_master(
        wallet.address, device, k10, passkey
    )
    await chain.client.submit(mutation, wallet)
    omni = actor_omni_for_wallet(wallet.address)
    return Operator(email, wallet, Device(key, omni, omni), passkey)


async def add_agent(
    chain: Chain, operator: Operator, label: str, services: list[str], *, read_only: bool = True
) -> Device:
    key = ec.generate_private_key(ec.SECP256R1())
    k10 = SoftwareK10Signer(key)
    actor = agent_omni(operator.omni, label)
    proof = await chain.client.k10_binding_proof(k10, operator.omni, actor)
    mutation = await chain.client.prepare_add_agent_device(
        operator.omni, NewAgent(label, k10.public_point, roles=1), proof, operator.authority
    )
    await chain.client.submit(mutation, operator.wallet)
    if services:
        scope = await chain.client.prepare_set_scope(
            operator.omni, actor, services, read_only, operator.authority
        )
        await chain.client.submit(scope, operator.wallet)
    return Device(key, operator.omni, actor)


async def revoke(chain: Chain, operator: Operator, device: Device) -> None:
    mutation = await chain.client.prepare_revoke_device(
        operator.omni, device.device_key_hash, operator.authority
    )
    await chain.client.submit(mutation, operator.wallet)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Stack:
    pki: Pki
    chain: Chain
    signer: RunningSigner
    store: SeaweedFS
    issuer: Issuer
    k1: ec.EllipticCurvePrivateKey
    kid: str
    core: WorkerCore
    worker_url: str
    config_path: Path
    audit: MemoryAudit
    operator: Operator
    frontend: str = "service"
    clock_offset: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    # -- caps and proofs ------------------------------------------------------------------

    async def cap(
        self,
        device: Device,
        op: CapOp | str,
        service: str = "openai",
        *,
        actor_omni: str | None = None,
        epoch: int | None = None,
        issued_at: int | None = None,
        lifetime: int = 300,
        aud: str = AUDIENCE,
    ) -> tuple[str, CapPayload]:
        payload = new_cap_payload(
            op=op,
            operator_omni=device.operator_omni,
            actor_omni=actor_omni or device.actor_omni,
            service=service,
            device_key_hash=device.device_key_hash,
            k3_epoch=epoch if epoch is not None else await self.chain.client.current_epoch(),
            aud=aud,
            now=issued_at if issued_at is not None else int(time.time()),
            lifetime=lifetime,
        )
        return sign_cap(payload, self.k1, self.kid).to_token(), payload

    def proof(
        self, payload: CapPayload, op: CapOp | str, body: bytes, key: ec.EllipticCurvePrivateKey
    ) -> str:
        claims = new_worker_pop_claims(
            cap_digest=cap_digest(payload), op=op, body=body, now=int(time.time())
        )
        return PopProof(claims.timestamp, claims.nonce, sign_pop(claims, key)).to_header_value()

    async def request(
        self,
        device: Device,
        op: str,
        body: dict[str, Any] | None = None,
        *,
        service: str = "openai",
        cap_op: str | None = None,
        proof_op: str | None = None,
        with_proof: bool = True,
        **cap_options: Any,
    ) -> Answer:
        raw = json.dumps(body).encode() if body is not None else b""
        token, payload = await self.cap(device, cap_op or op, service, **cap_options)
        headers = {"authorization": f"Cap {token}", "content-type": "application/json"}
        if with_proof:
            headers["agentkeys-pop"] = self.proof(payload, proof_op or op, raw, device.key)
        return await self.post(f"/v1/cred/{op}", headers, raw)

    async def post(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        if self.frontend == "service":
            async with httpx.AsyncClient(base_url=self.worker_url, trust_env=False) as http:
                response = await http.post(path, headers=headers, content=raw)
            return Answer(response.status_code, response.json())
        event = {
            "version": "2.0",
            "routeKey": f"POST {path}",
            "rawPath": path,
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {"http": {"method": "POST", "path": path, "sourceIp": "127.0.0.1"}},
            "body": base64.b64encode(raw).decode() if raw else None,
            "isBase64Encoded": bool(raw),
        }
        result = await trio.to_thread.run_sync(worker_lambda.handler, event, None)
        assert result["headers"]["cache-control"] == "no-store"
        return Answer(result["statusCode"], json.loads(result["body"]))

    async def fetch(self, device: Device, service: str = "openai", **kw: Any) -> Answer:
        return await self.request(device, "fetch", {}, service=service, **kw)

    async def store_credential(
        self, device: Device, service: str, secret: bytes, **kw: Any
    ) -> Answer:
        body = {"credential": b64url_encode(secret)}
        return await self.request(device, "store", body, service=service, **kw)

    # -- S3 inspection with the admin identity ------------------------------------------------

    async def admin_get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        def get() -> bytes | None:
            try:
                body: bytes = (
                    self.store.admin_client().get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read()
                )
                return body
            except ClientError as exc:
                if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return None
                raise

        return await trio.to_thread.run_sync(get, limiter=_LIMITER)

    async def admin_put(self, key: str, data: bytes) -> None:
        def put() -> None:
            self.store.admin_client().put_object(Bucket=TEST_BUCKET, Key=key, Body=data)

        await trio.to_thread.run_sync(put, limiter=_LIMITER)

    async def admin_keys(self, prefix: str) -> list[str]:
        def keys() -> list[str]:
            client = self.store.admin_client()
            found: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=TEST_BUCKET, Prefix=prefix
            ):
                found.extend(item["Key"] for item in page.get("Contents", []))
            return found

        return await trio.to_thread.run_sync(keys, limiter=_LIMITER)


def write_worker_config(
    directory: Path, *, pki: Pki, chain: Chain, signer_url: str, s3: str, jwks: bytes
) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    jwks_path = directory / "caps-jwks.json"
    jwks_path.write_bytes(jwks)
    jwks_path.chmod(0o600)
    config = directory / "worker.toml"
    config.write_text(
        f"""
[worker]
host = "127.0.0.1"
port = 0

[caps]
audience = "{AUDIENCE}"
jwks_file = "{jwks_path}"

[chain]
rpc_url = "{chain.anvil.rpc_url}"
deployment = "{chain.deployment_path}"

[signer]
url = "{signer_url}"
ca = "{pki.ca}"
cert = "{pki.cert("worker")}"
key = "{pki.key("worker")}"

[storage]
bucket = "{TEST_BUCKET}"
endpoint = "{s3}"
"""
    )
    config.chmod(0o600)
    return config


PreTransition = Callable[[RunningSigner, SeaweedFS, Operator], Awaitable[None]]


@asynccontextmanager
async def open_stack(
    nursery: trio.Nursery,
    pki: Pki,
    chain: Chain,
    tmp_path: Path,
    *,
    pre_transition: PreTransition | None = None,
) -> AsyncIterator[Stack]:
    """The whole stack; ``pre_transition`` runs first against the v1-only policy.

    With ``pre_transition``, SeaweedFS first runs with the policy before SPEC section 9
    step 4 (``_v1_wallet_keyed`` statements only) and a signer pointed at it; the hook
    writes the "existing" data; then SeaweedFS restarts on the same data directory with
    both statement families, as the transition does.
    """
    issuer = await serve_issuer(nursery)
    operator = await register_operator(chain, "alice@example.com")
    run_dir = tmp_path / "weed"
    if pre_transition is not None:
        old_iam = deployed_iam_config(bucket=TEST_BUCKET, issuer=issuer.url, stage="v1")
        async with start_seaweedfs(iam=old_iam, bucket=TEST_BUCKET, run_dir=run_dir) as old:
            old_signer = await start_sts_signer(nursery, pki, chain, tmp_path, old, issuer, old_iam)
            await pre_transition(old_signer, old, operator)
            old_signer.service.shutdown()
    iam = deployed_iam_config(bucket=TEST_BUCKET, issuer=issuer.url)
    async with start_seaweedfs(iam=iam, bucket=TEST_BUCKET, run_dir=run_dir) as store:
        signer = await start_sts_signer(nursery, pki, chain, tmp_path, store, issuer, iam)
        k1 = ec.generate_private_key(ec.SECP256R1())
        jwks = JsonWebKeySet.from_public_keys([k1.public_key()])
        (kid,) = jwks.by_kid
        config_path = write_worker_config(
            tmp_path / "worker-config", pki=pki, chain=chain, signer_url=signer.bound.url,
            s3=store.s3_endpoint, jwks=jwks.to_json(),
        )  # fmt: skip
        async with signer.client(pki, "worker") as signer_http:
            core = WorkerCore(
                audience=AUDIENCE,
                cap_keys=StaticCapKeys(jwks),
                chain=chain.client,
                signer=SignerClient(signer_http),
                storage=StorageSettings(bucket=TEST_BUCKET, endpoint=store.s3_endpoint),
            )
            audit = MemoryAudit()
            service = WorkerService(core=core, settings=ServerSettings(), audit=audit)
            bound: BoundAddress = await nursery.start(service.serve)
            yield Stack(
                pki=pki, chain=chain, signer=signer, store=store, issuer=issuer, k1=k1,
                kid=kid, core=core, worker_url=bound.url, config_path=config_path,
                audit=audit, operator=operator,
            )  # fmt: skip
            service.shutdown()
            signer.service.shutdown()


@pytest.fixture
async def stack(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with open_stack(nursery, pki, chain, tmp_path) as value:
        yield value


@pytest.fixture(params=["service", "lambda"])
def frontend(
    request: pytest.FixtureRequest, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> Stack:
    """The stack answering through the microservice or the Lambda handler."""
    stack.frontend = request.param
    if request.param == "lambda":
        monkeypatch.setenv(worker_lambda.CONFIG_ENV, str(stack.config_path))
        worker_lambda.reset_for_tests()
    return stack


def legacy_backend(
    signer: SignerClient,
    store: SeaweedFS,
    operator: Operator,
    version: EnvelopeChoice,
    warnings: list[str],
    allowed: frozenset[str] | None = None,
) -> LegacyS3Backend:
    """The legacy client-side backend of ``operator``'s master, as the v1 CLI used it."""
    return LegacyS3Backend(
        identity_omni=operator.identity_omni,
        wallet=operator.wallet_address,
        actor_omni=operator.omni,
        source=SignerStsCredentials(signer, operator.omni, operator.wallet_address),
        signer=signer,
        bucket=TEST_BUCKET,
        endpoint=store.s3_endpoint,
        envelope_version=version,
        allowed_services=allowed,
        warn=warnings.append,
    )


def write_legacy(
    pki: Pki, credentials: dict[str, bytes], *, v2: dict[str, bytes] | None = None
) -> PreTransition:
    """A pre-transition hook writing ``credentials`` as 0x01 with the legacy backend."""

    async def hook(signer: RunningSigner, store: SeaweedFS, operator: Operator) -> None:
        warned: list[str] = []
        async with signer.client(pki, "worker") as http:
            client = SignerClient(http)
            legacy = legacy_backend(client, store, operator, EnvelopeChoice.V1, warned)
            for service, secret in credentials.items():
                await legacy.store(service, secret)
            assert await legacy.list() == sorted(credentials)
            if v2:
                # Before the transition the v2 prefix is not in the policy: 0x02 is refused.
                legacy2 = legacy_backend(client, store, operator, EnvelopeChoice.V2, warned)
                with pytest.raises(StorageDenied):
                    await legacy2.store(next(iter(v2)), b"x")
        assert warned
        assert warned[0] == DEPRECATION_MESSAGE

    return hook
