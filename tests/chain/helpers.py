"""Shared helpers for the chain tests: revert expectations and faulty passkeys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from eth_account.signers.local import LocalAccount

from agentkeys.chain.challenge import NewAgent
from agentkeys.chain.client import ChainClient, SignedMutation
from agentkeys.chain.errors import ContractReverted
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.devstack.softauthn import SoftAssertion, SoftAuthenticator
from agentkeys.omni import agent_omni
from attest.k10_signature import P256_N


@contextlib.contextmanager
def reverts(name: str) -> Iterator[None]:
    """Expect a ContractReverted whose decoded custom error is ``name``."""
    with pytest.raises(ContractReverted) as info:
        yield
    assert info.value.revert_error == name, info.value.reason


async def register_agent(
    client: ChainClient,
    operator_omni: str,
    label: str,
    authority: MasterAuthority,
    sender: LocalAccount,
) -> tuple[str, SoftwareK10Signer]:
    """Register an agent device for ``label`` (so the registry records the agent's operator).

    Returns the agent omni and the agent device's K10.
    """
    mutation, k10 = await agent_device_mutation(client, operator_omni, label, authority)
    await client.submit(mutation, sender)
    return agent_omni(operator_omni, label), k10


async def agent_device_mutation(
    client: ChainClient, operator_omni: str, label: str, authority: MasterAuthority
) -> tuple[SignedMutation, SoftwareK10Signer]:
    """A signed add_agent_device for ``label`` with a fresh agent K10 (roles CAP_MINT)."""
    k10 = SoftwareK10Signer.generate()
    proof = await client.k10_binding_proof(k10, operator_omni, agent_omni(operator_omni, label))
    mutation = await client.prepare_add_agent_device(
        operator_omni, NewAgent(label, k10.public_point, roles=1), proof, authority
    )
    return mutation, k10


class VariantPasskey:
    """A SoftAuthenticator whose assertions carry the given ``get`` options (negative tests)."""

    def __init__(self, passkey: SoftAuthenticator, *, high_s: bool = False, **options: Any):
        self.passkey = passkey
        self.high_s = high_s
        self.options = options
        self.last: SoftAssertion | None = None

    async def get_assertion(self, challenge: bytes) -> SoftAssertion:
        assertion = self.passkey.get(challenge, **self.options)
        if not self.high_s:
            return assertion
        r, s = decode_dss_signature(assertion.signature)
        s = s if s > P256_N // 2 else P256_N - s
        self.last = SoftAssertion(
            assertion.credential_id,
            assertion.authenticator_data,
            assertion.client_data_json,
            encode_dss_signature(r, s),
        )
        return self.last
