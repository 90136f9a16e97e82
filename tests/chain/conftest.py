"""Chain-layer fixtures: a real anvil per test with the contract set deployed.

``chain`` is parametrised over anvil's default hardfork (P-256 precompile at 0x100) and
``prague`` (no precompile: the Solidity fallback runs), so every test using it covers both.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from agentkeys.chain import challenge as ch
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import Deployment, deploy_all
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.devstack import Anvil, start_anvil
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet

RP_ID = "agentkeys.localhost"
ORIGIN = "https://agentkeys.localhost"
ALL_ROLES = 7


@dataclass
class Chain:
    anvil: Anvil
    client: ChainClient
    deployment: Deployment
    accounts: list[LocalAccount]
    governance: list[LocalAccount]

    @property
    def deployer(self) -> LocalAccount:
        return self.accounts[0]


@dataclass
class Operator:
    """An operator with a registered first master device."""

    wallet: LocalAccount
    omni: str
    k10: SoftwareK10Signer
    passkey: SoftAuthenticator

    @property
    def authority(self) -> MasterAuthority:
        return MasterAuthority(self.k10.device_key_hash, self.k10, self.passkey)


def new_master(
    k10: SoftwareK10Signer, passkey: SoftAuthenticator, roles: int = ALL_ROLES
) -> ch.NewMaster:
    return ch.NewMaster(
        k10_point=k10.public_point,
        k11_credential_id_hash=hashlib.sha256(passkey.credential_id).digest(),
        k11_point=passkey.public_point,
        rp_id_hash=passkey.rp_id_hash,
        roles=roles,
    )


async def register_operator(
    chain: Chain, wallet: LocalAccount, *, counting: bool = True
) -> Operator:
    """Register ``wallet``'s operator with a fresh K10 and passkey (sovereign mode)."""
    k10 = SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, counting=counting)
    mutation = await chain.client.prepare_register_first_master(
        wallet.address, new_master(k10, passkey), k10, passkey
    )
    await chain.client.submit(mutation, wallet)
    return Operator(wallet, actor_omni_for_wallet(wallet.address), k10, passkey)


async def _start_chain(hardfork: str | None) -> AsyncIterator[Chain]:
    async with start_anvil(hardfork=hardfork) as anvil, httpx.AsyncClient(timeout=10) as http:
        client = ChainClient(http, anvil.rpc_url)
        accounts = [account_from_key(a.private_key) for a in anvil.accounts]
        governance = accounts[6:9]
        deployment = await deploy_all(
            client, accounts[0], governance=[a.address for a in governance], threshold=2
        )
        yield Chain(anvil, client, deployment, accounts, governance)


@pytest.fixture(params=[None, "prague"], ids=["precompile", "prague-fallback"])
async def chain(request: pytest.FixtureRequest) -> AsyncIterator[Chain]:
    """anvil (default hardfork and prague) with the contracts deployed."""
    async for value in _start_chain(request.param):
        yield value


@pytest.fixture
async def chain_default() -> AsyncIterator[Chain]:
    """anvil on its default hardfork only (tests whose subject is not P-256)."""
    async for value in _start_chain(None):
        yield value


@pytest.fixture
async def operator(chain: Chain) -> Operator:
    """Operator A (dev account 1) with its first master device registered."""
    return await register_operator(chain, chain.accounts[1])
