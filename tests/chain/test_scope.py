"""ScopeContract input rules and access to the registry's authorisation."""

from __future__ import annotations

from agentkeys.chain import challenge as ch
from agentkeys.chain.client import SignedMutation
from agentkeys.omni import agent_omni, service_hash
from tests.chain.conftest import Chain, Operator, register_operator
from tests.chain.helpers import reverts


async def test_scope_inputs_are_checked(chain_default: Chain) -> None:
    chain = chain_default
    op: Operator = await register_operator(chain, chain.accounts[1])
    operator, agent = bytes.fromhex(op.omni), bytes.fromhex(agent_omni(op.omni, "bot"))
    a, b = sorted([service_hash("openai"), service_hash("github")])
    for services in ([], [b, a], [a, a], [bytes([i]) * 32 for i in range(1, 66)]):
        with reverts("ServicesInvalid"):
            await chain.client.submit(
                SignedMutation(
                    "ScopeContract",
                    "set_scope_with_webauthn",
                    (operator, agent, services, False, b"", b""),
                ),
                op.wallet,
            )
    with reverts("AgentIsOperator"):
        await chain.client.submit(
            await chain.client.prepare_set_scope(op.omni, op.omni, ["openai"], False, op.authority),
            op.wallet,
        )
    with reverts("ScopeNotFound"):
        await chain.client.submit(
            await chain.client.prepare_revoke_scope(op.omni, agent, op.authority), op.wallet
        )


async def test_only_the_scope_contract_may_ask_for_authorisation(chain_default: Chain) -> None:
    chain = chain_default
    op = await register_operator(chain, chain.accounts[1])
    with reverts("NotScopeContract"):
        await chain.client.transact(
            op.wallet,
            "SidecarRegistry",
            "authorise_scope_mutation",
            ch.OP_SET_SCOPE,
            bytes.fromhex(op.omni),
            bytes(32),
            b"",
            b"",
        )
    with reverts("NotDeployer"):
        await chain.client.transact(
            op.wallet, "SidecarRegistry", "bind_scope_contract", op.wallet.address
        )
    with reverts("ScopeContractAlreadyBound"):
        await chain.client.transact(
            chain.deployer, "SidecarRegistry", "bind_scope_contract", op.wallet.address
        )


async def test_mutations_for_unregistered_operators_revert(chain_default: Chain) -> None:
    chain = chain_default
    op = await register_operator(chain, chain.accounts[1])
    stranger = agent_omni(op.omni, "not-an-operator")
    with reverts("OperatorNotRegistered"):
        await chain.client.submit(
            await chain.client.prepare_set_scope(
                stranger, agent_omni(op.omni, "x"), ["openai"], False, op.authority
            ),
            op.wallet,
        )
