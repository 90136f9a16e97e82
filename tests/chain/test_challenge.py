"""The challenges and digests computed in Python equal what the contracts rebuild."""

from __future__ import annotations

import hashlib

import pytest
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak

from agentkeys.chain import challenge as ch
from agentkeys.chain.errors import AbiError
from agentkeys.omni import actor_omni_for_wallet, agent_omni, service_hash
from tests.chain.conftest import Chain, Operator, register_operator


async def test_python_challenges_match_the_contract(chain_default: Chain) -> None:
    chain = chain_default
    op: Operator = await register_operator(chain, chain.accounts[1])
    agent = bytes.fromhex(agent_omni(op.omni, "bot"))
    services = ch.sorted_services([service_hash("openai"), service_hash("github")])
    cases = [
        (ch.OP_SET_SCOPE, "ScopeContract", ch.set_scope_params(agent, services, True)),
        (ch.OP_REVOKE_SCOPE, "ScopeContract", ch.revoke_scope_params(agent)),
        (ch.OP_REVOKE_DEVICE, "SidecarRegistry", ch.revoke_device_params(bytes(32))),
        (ch.OP_ROTATE_K10, "SidecarRegistry", ch.rotate_k10_params(bytes(32), bytes(64))),
    ]
    for op_tag, target, params in cases:
        ours = await chain.client.challenge_for(op_tag, target, op.omni, params)
        (theirs,) = await chain.client.call(
            "SidecarRegistry",
            "master_challenge",
            op_tag,
            chain.client.address_of(target),
            bytes.fromhex(op.omni),
            params,
        )
        assert ours == theirs
    for name, tag in [
        ("OP_REGISTER_FIRST_MASTER", ch.OP_REGISTER_FIRST_MASTER),
        ("OP_ADD_MASTER_DEVICE", ch.OP_ADD_MASTER_DEVICE),
        ("OP_ADD_AGENT_DEVICE", ch.OP_ADD_AGENT_DEVICE),
        ("OP_REVOKE_DEVICE", ch.OP_REVOKE_DEVICE),
        ("OP_ROTATE_K10", ch.OP_ROTATE_K10),
    ]:
        assert (await chain.client.call("SidecarRegistry", name)) == (tag,)
    for name, tag in [("OP_SET_SCOPE", ch.OP_SET_SCOPE), ("OP_REVOKE_SCOPE", ch.OP_REVOKE_SCOPE)]:
        assert (await chain.client.call("ScopeContract", name)) == (tag,)


async def test_omni_derivations_match_the_contract(chain_default: Chain) -> None:
    chain = chain_default
    for account in chain.accounts[:3]:
        (omni,) = await chain.client.call(
            "SidecarRegistry", "actor_omni_of_wallet", account.address
        )
        assert omni.hex() == actor_omni_for_wallet(account.address)
        (agent,) = await chain.client.call("SidecarRegistry", "agent_omni_of", omni, "bot-7")
        assert agent.hex() == agent_omni(omni.hex(), "bot-7")
    zero = "0x" + "00" * 20
    (omni,) = await chain.client.call("SidecarRegistry", "actor_omni_of_wallet", zero)
    assert omni == hashlib.sha256(b"agentkeysevm0x" + b"0" * 40).digest()


async def test_first_master_typed_digest_matches_eip712(chain_default: Chain) -> None:
    chain = chain_default
    operator, challenge = b"\x11" * 32, b"\x22" * 32
    (digest,) = await chain.client.call(
        "SidecarRegistry", "first_master_typed_digest", operator, challenge
    )
    typed = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "RegisterFirstMaster": [
                    {"name": "operatorOmni", "type": "bytes32"},
                    {"name": "challenge", "type": "bytes32"},
                ],
            },
            "primaryType": "RegisterFirstMaster",
            "domain": {
                "name": "agentkeys.SidecarRegistry",
                "version": "1",
                "chainId": chain.anvil.chain_id,
                "verifyingContract": chain.deployment.addresses.registry,
            },
            "message": {"operatorOmni": operator, "challenge": challenge},
        }
    )
    assert digest == keccak(b"\x19" + typed.version + typed.header + typed.body)


def test_challenge_inputs_are_checked() -> None:
    with pytest.raises(AbiError):
        ch.revoke_scope_params(b"short")
    with pytest.raises(AbiError):
        ch.rotate_k10_params(bytes(32), bytes(63))
    assert ch.sorted_services([b"\x02" * 32, b"\x01" * 32, b"\x02" * 32]) == (
        b"\x01" * 32,
        b"\x02" * 32,
    )
