"""The legacy client-side S3 backend on its real path: the broker's /v1/mint-oidc-jwt (J1 and,
the operator having a master on chain, a fresh assertion by its passkey) exchanged at
SeaweedFS STS (the IAM document from deploy/aws), v1 KEKs from the signer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.broker import J1
from agentkeys.chain import account_from_key
from agentkeys.chain.client import ChainClient
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.clients import BrokerClient, SignerClient
from agentkeys.devstack import DEV_ROLE_NAME, SeaweedFS, start_seaweedfs
from agentkeys.devstack.deployed_iam import deployed_iam_config
from agentkeys.legacy_s3 import (
    DEPRECATION_MESSAGE,
    BrokerOidcCredentials,
    EnvelopeChoice,
    LegacyS3Backend,
    LegacyScopeDenied,
    LegacyTokenRefused,
)
from agentkeys.signer import StsExchanger
from agentkeys.worker.errors import CredentialNotFound
from agentkeys.worker.layout import v1_key, v2_key
from attest.seal import SoftwareSealer
from tests.broker.conftest import Chain as BrokerChain
from tests.broker.conftest import RunningBroker, StartBroker
from tests.broker.conftest import smtp as smtp
from tests.broker.conftest import start_broker as start_broker
from tests.service.conftest import Pki
from tests.signer.conftest import Chain, RunningSigner, seed_state, start_signer
from tests.stack_fixtures import TEST_BUCKET
from tests.worker.conftest import Operator, register_operator


@dataclass
class LegacyStack:
    broker: RunningBroker
    store: SeaweedFS
    signer: RunningSigner
    operator: Operator
    sts: StsExchanger
    pki: Pki

    async def j1(self) -> str:
        token, _ = await self.broker.service.sessions.issue(
            stage=J1, subject=self.operator.omni, now=int(time.time()), lifetime=600,
            extra={"wallet": self.operator.wallet_address},
        )  # fmt: skip
        return token

    def backend(
        self, signer: SignerClient, session: str, version: EnvelopeChoice, warned: list[str],
        allowed: frozenset[str] | None = None, *, passkey: bool = True,
    ) -> LegacyS3Backend:  # fmt: skip
        operator = self.operator

        async def assert_(challenge: bytes) -> dict[str, object]:
            return dict(operator.passkey.get(challenge).to_json())

        source = BrokerOidcCredentials(
            BrokerClient(self.broker.http), session, self.sts,
            device_key_hash=operator.master.device_key_hash if passkey else None,
            assert_=assert_ if passkey else None,
        )  # fmt: skip
        return LegacyS3Backend(
            identity_omni=self.operator.identity_omni,
            wallet=self.operator.wallet_address,
            actor_omni=self.operator.omni,
            source=source,
            signer=signer,
            bucket=TEST_BUCKET,
            endpoint=self.store.s3_endpoint,
            envelope_version=version,
            allowed_services=allowed,
            warn=warned.append,
        )


@pytest.fixture
async def legacy(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, start_broker: StartBroker
) -> AsyncIterator[LegacyStack]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        client = ChainClient(http, chain.anvil.rpc_url)
        on_chain = BrokerChain(
            chain.anvil, client, read_deployment_record(chain.deployment_path),
            [account_from_key(a.private_key) for a in chain.anvil.accounts],
        )  # fmt: skip
        broker: RunningBroker = await start_broker(chain=on_chain)
    iam = deployed_iam_config(bucket=TEST_BUCKET, issuer=broker.url)
    async with start_seaweedfs(iam=iam, bucket=TEST_BUCKET, run_dir=tmp_path / "weed") as store:
        sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
        await seed_state(tmp_path / "signer-state", sealer)
        signer = await start_signer(
            nursery, pki=pki, chain=chain, state_dir=tmp_path / "signer-state", sealer=sealer
        )
        operator = await register_operator(chain, "carol@example.com")
        sts = StsExchanger(
            endpoint=store.s3_endpoint, role_arn=iam.role(DEV_ROLE_NAME).arn,
            region="us-east-1", duration_seconds=900,
        )  # fmt: skip
        yield LegacyStack(broker, store, signer, operator, sts, pki)
        signer.service.shutdown()


async def test_legacy_backend_writes_v1_and_v2_layouts(legacy: LegacyStack) -> None:
    op = legacy.operator
    warned: list[str] = []
    session = await legacy.j1()
    async with legacy.signer.client(legacy.pki, "worker") as http:
        signer = SignerClient(http)
        v1 = legacy.backend(signer, session, EnvelopeChoice.V1, warned)
        assert await v1.store("OpenAI", b"sk-v1") == v1_key(op.wallet_address, "openai")
        assert await v1.fetch("openai") == b"sk-v1"
        assert await v1.list() == ["openai"]

        v2 = legacy.backend(signer, session, EnvelopeChoice.V2, warned)
        assert await v2.store("github", b"ghp-v2") == v2_key(op.omni, "github")
        assert await v2.fetch("github") == b"ghp-v2"
        with pytest.raises(CredentialNotFound):
            await v2.fetch("openai")  # v2 reads its own key only

        scoped = legacy.backend(signer, session, EnvelopeChoice.V1, warned, frozenset({"openai"}))
        with pytest.raises(LegacyScopeDenied):
            await scoped.store("github", b"nope")
        assert await scoped.list() == ["openai"]
    assert warned == [DEPRECATION_MESSAGE] * 3

    def raw(key: str) -> bytes:
        client = legacy.store.admin_client()
        data: bytes = client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read()
        return data

    assert (await trio.to_thread.run_sync(raw, v1_key(op.wallet_address, "openai")))[0] == 1
    assert (await trio.to_thread.run_sync(raw, v2_key(op.omni, "github")))[0] == 2


async def test_legacy_backend_needs_a_broker_session(legacy: LegacyStack) -> None:
    async with legacy.signer.client(legacy.pki, "worker") as http:
        backend = legacy.backend(SignerClient(http), "not-a-session", EnvelopeChoice.V1, [])
        with pytest.raises(LegacyTokenRefused, match="session"):
            await backend.store("openai", b"x")


async def test_legacy_backend_needs_the_master_passkey_once_on_chain(legacy: LegacyStack) -> None:
    """The operator has a master on chain: a J1 alone no longer yields S3 credentials."""
    session = await legacy.j1()
    async with legacy.signer.client(legacy.pki, "worker") as http:
        backend = legacy.backend(SignerClient(http), session, EnvelopeChoice.V1, [], passkey=False)
        with pytest.raises(LegacyTokenRefused, match="passkey_assertion_required"):
            await backend.store("openai", b"x")
