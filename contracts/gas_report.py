"""Measure the gas of every deployment step and mutation and write docs/gas.md.

Runs the real contracts on anvil twice: on anvil's default hardfork (P-256 verified by the
EIP-7951 precompile at 0x100) and on ``--hardfork prague`` (no precompile: OpenZeppelin's
Solidity P-256 fallback). Usage: ``.venv/bin/python contracts/gas_report.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import trio
from eth_abi.abi import encode

from agentkeys.chain import challenge as ch
from agentkeys.chain.artifacts import load_artifact
from agentkeys.chain.client import ChainClient, ContractAddresses, Receipt, account_from_key
from agentkeys.chain.deploy import _deploy_one
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.devstack import start_anvil
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet, agent_omni

REPO = Path(__file__).resolve().parents[1]
RP_ID = "agentkeys.localhost"
ORIGIN = "https://agentkeys.localhost"
SERVICES_5 = ["openai", "openrouter", "github", "anthropic", "mistral"]


def _master(k10: SoftwareK10Signer, passkey: SoftAuthenticator) -> ch.NewMaster:
    return ch.NewMaster(
        k10_point=k10.public_point,
        k11_credential_id_hash=hashlib.sha256(passkey.credential_id).digest(),
        k11_point=passkey.public_point,
        rp_id_hash=passkey.rp_id_hash,
        roles=7,
    )


async def measure(hardfork: str | None) -> dict[str, int]:
    """Gas used per step on one anvil."""
    gas: dict[str, int] = {}
    async with start_anvil(hardfork=hardfork) as anvil, httpx.AsyncClient(timeout=30) as http:
        client = ChainClient(http, anvil.rpc_url)
        accounts = [account_from_key(a.private_key) for a in anvil.accounts]
        deployer, wallet, relay, wallet2 = accounts[0], accounts[1], accounts[2], accounts[3]
        governance = accounts[6:9]

        def note(name: str, receipt: Receipt) -> None:
            gas[name] = receipt.gas_used

        registry, _ = await _deploy_one(client, deployer, "SidecarRegistry", [])
        scope, _ = await _deploy_one(client, deployer, "ScopeContract", [registry])
        members = sorted((a.address for a in governance), key=lambda a: int(a, 16))
        epoch, _ = await _deploy_one(client, deployer, "K3EpochCounter", [members, 2])
        constructor_args: dict[str, list[object]] = {
            "SidecarRegistry": [],
            "ScopeContract": [registry],
            "K3EpochCounter": [members, 2],
        }
        for name, args in constructor_args.items():
            artifact = load_artifact(name)
            data = artifact.bytecode + encode(list(artifact.abi.constructor_inputs), args)
            estimate = await client.rpc.call(
                "eth_estimateGas", {"from": deployer.address, "data": "0x" + data.hex()}
            )
            gas[f"deploy {name}"] = int(estimate, 16)
        client.with_addresses(ContractAddresses(registry, scope, epoch))
        note(
            "bind_scope_contract",
            await client.transact(deployer, "SidecarRegistry", "bind_scope_contract", scope),
        )

        k10 = SoftwareK10Signer.generate()
        passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
        mutation = await client.prepare_register_first_master(
            wallet.address, _master(k10, passkey), k10, passkey
        )
        note("register_first_master (sovereign)", await client.submit(mutation, wallet))
        k10b = SoftwareK10Signer.generate()
        passkey_b = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
        mutation = await client.prepare_register_first_master(
            wallet2.address, _master(k10b, passkey_b), k10b, passkey_b, relay_signer=wallet2
        )
        note("register_first_master (relay, EIP-712)", await client.submit(mutation, relay))

        op = actor_omni_for_wallet(wallet.address)
        auth = MasterAuthority(k10.device_key_hash, k10, passkey)
        k10_2 = SoftwareK10Signer.generate()
        passkey_2 = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
        note(
            "add_master_device",
            await client.submit(
                await client.prepare_add_master_device(
                    op,
                    _master(k10_2, passkey_2),
                    await client.k10_binding_proof(k10_2, op, op),
                    auth,
                ),
                wallet,
            ),
        )
        agent_k10 = SoftwareK10Signer.generate()
        note(
            "add_agent_device",
            await client.submit(
                await client.prepare_add_agent_device(
                    op,
                    ch.NewAgent("bot", agent_k10.public_point),
                    await client.k10_binding_proof(agent_k10, op, agent_omni(op, "bot")),
                    auth,
                ),
                wallet,
            ),
        )
        agent = agent_omni(op, "bot")
        note(
            "set_scope_with_webauthn (1 service, new entry)",
            await client.submit(
                await client.prepare_set_scope(op, agent, ["openai"], False, auth), wallet
            ),
        )
        note(
            "set_scope_with_webauthn (5 services, replace)",
            await client.submit(
                await client.prepare_set_scope(op, agent, SERVICES_5, True, auth), wallet
            ),
        )
        second_agent_k10 = SoftwareK10Signer.generate()  # scope is only for registered agents
        await client.submit(
            await client.prepare_add_agent_device(
                op,
                ch.NewAgent("b", second_agent_k10.public_point),
                await client.k10_binding_proof(second_agent_k10, op, agent_omni(op, "b")),
                auth,
            ),
            wallet,
        )
        note(
            "set_scope_with_webauthn (1 service, relay)",
            await client.submit(
                await client.prepare_set_scope(op, agent_omni(op, "b"), ["x"], False, auth), relay
            ),
        )
        note(
            "revoke_scope_with_webauthn",
            await client.submit(await client.prepare_revoke_scope(op, agent, auth), wallet),
        )
        note(
            "revoke_device",
            await client.submit(
                await client.prepare_revoke_device(op, agent_k10.device_key_hash, auth), wallet
            ),
        )
        new_k10 = SoftwareK10Signer.generate()
        note(
            "rotate_k10",
            await client.submit(
                await client.prepare_rotate_k10(
                    op,
                    k10_2.device_key_hash,
                    new_k10.public_point,
                    await client.k10_binding_proof(new_k10, op, op),
                    auth,
                ),
                wallet,
            ),
        )
        note(
            "advance (2-of-3 approvals)",
            await client.submit(await client.prepare_advance_epoch(2, governance[:2]), deployer),
        )
        note(
            "set_governance (2-of-3 approvals, 3 members)",
            await client.submit(
                await client.prepare_set_governance(members, 2, governance[1:]), deployer
            ),
        )
    return gas


def render(with_precompile: dict[str, int], fallback: dict[str, int]) -> str:
    """docs/gas.md."""
    lines = [
        "# Gas and cost of the agentkeys contracts",
        "",
        "Generated by `contracts/gas_report.py` (do not edit by hand) from the real contracts",
        "on anvil: *precompile* = anvil's default hardfork, P-256 verified by the EIP-7951",
        "precompile at `0x100`; *fallback* = `--hardfork prague`, no precompile, OpenZeppelin's",
        "Solidity P-256 verifier. Master mutations verify two P-256 signatures (K10 and the K11",
        "assertion); adding a device or rotating a K10 verifies a third (the new K10's proof of",
        "possession); registering a first master verifies the new K10 and passkey plus, in relay",
        "mode, the wallet's EIP-712 (secp256k1) signature. K3 governance verifies M secp256k1",
        "signatures. Deployment rows are `eth_estimateGas` of the creation transaction.",
        "",
        "Cost = gas × gas price. The columns give it in the chain's native token at 1 gwei",
        "(1e-9 native units per gas) and at 0.01 gwei (typical of an L2); multiply by the",
        "chain's actual price. On Heima the fee token is HEI.",
        "",
        "| operation | gas (precompile) | gas (fallback) | cost @1 gwei, precompile | "
        "cost @1 gwei, fallback | cost @0.01 gwei, precompile |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, gas in with_precompile.items():
        other = fallback[name]
        lines.append(
            f"| {name} | {gas:,} | {other:,} | {gas * 1e-9:.6f} | {other * 1e-9:.6f} | "
            f"{gas * 1e-11:.8f} |"
        )
    lines += [
        "",
        "Reads (`get_device`, `get_scope`, `is_service_in_scope`, `current_epoch`,",
        "`master_wallet`, `agent_operator`) are `eth_call`s and cost no gas.",
        "",
    ]
    return "\n".join(lines)


async def main() -> None:
    """Measure both hardforks and write docs/gas.md."""
    with_precompile = await measure(None)
    fallback = await measure("prague")
    (REPO / "docs" / "gas.md").write_text(render(with_precompile, fallback))
    print(render(with_precompile, fallback))


if __name__ == "__main__":
    trio.run(main)
