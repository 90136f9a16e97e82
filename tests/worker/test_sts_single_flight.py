"""STS exchanges are single-flight per (actor, wallet tag): one slow exchange
does not hold up other actors, and concurrent requests for one session share one exchange.

The signer is the real one (mTLS, SeaweedFS STS); the test only holds one actor's exchange
at a gate before passing it on, to make "slow" deterministic without timing."""

from __future__ import annotations

from collections import Counter

import trio

from agentkeys.clients.signer import AwsCredentials, SignerClient
from agentkeys.worker import StorageSettings, WorkerCore
from agentkeys.worker._s3 import ObjectStore
from tests.stack_fixtures import TEST_BUCKET
from tests.worker.conftest import AUDIENCE, Stack, add_agent

DEADLOCK_GUARD = 60  # seconds; a hang means the exchanges are serialised again


class GatedSigner(SignerClient):
    """The real signer client; exchanges for ``held`` wait until ``gate`` is set."""

    def __init__(self, client: SignerClient, held: str) -> None:
        self._client = client
        self.held = held
        self.gate = trio.Event()
        self.entered = trio.Event()
        self.calls: Counter[tuple[str, str | None]] = Counter()

    async def sts_credentials(self, actor_omni: str, wallet: str | None) -> AwsCredentials:
        self.calls[(actor_omni, wallet)] += 1
        if actor_omni == self.held:
            self.entered.set()
            await self.gate.wait()
        return await self._client.sts_credentials(actor_omni, wallet)


async def test_a_slow_exchange_stalls_nobody_else_and_is_shared(stack: Stack) -> None:
    s = stack
    op = s.operator
    agent = await add_agent(s.chain, op, "bot", ["openai"])
    async with s.signer.client(s.pki, "worker") as http:
        signer = GatedSigner(SignerClient(http), held=op.omni)
        core = WorkerCore(
            audience=AUDIENCE, cap_keys=s.core._cap_keys, chain=s.chain.client, signer=signer,
            storage=StorageSettings(bucket=TEST_BUCKET, endpoint=s.store.s3_endpoint),
        )  # fmt: skip
        stores: list[ObjectStore] = []

        async def open_held() -> None:
            stores.append(await core._object_store(op.omni, op.wallet_address))

        with trio.fail_after(DEADLOCK_GUARD):
            async with trio.open_nursery() as nursery:
                for _ in range(3):  # three requests for the held session
                    nursery.start_soon(open_held)
                await signer.entered.wait()
                # While the operator's exchange hangs, the agent's session is opened.
                agent_store = await core._object_store(agent.actor_omni, None)
                assert await agent_store.get(f"bots/{agent.actor_omni}/credentials/x.enc") is None
                assert not signer.gate.is_set()
                assert stores == []
                signer.gate.set()
        assert len(stores) == 3
        assert len({id(store) for store in stores}) == 1  # one store for the session
        assert signer.calls[(op.omni, op.wallet_address)] == 1  # one exchange, shared
        assert signer.calls[(agent.actor_omni, None)] == 1
        assert core._flights == {}  # no per-session state left behind
