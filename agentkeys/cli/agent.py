"""``agentkeys agent create <label>``: register an agent device, approved by K10 + passkey.

SPEC.md sections 6 and 7. The agent's own K10 (the key its sidecar will prove possession with)
is a software key file, ``<home>/agents/<label>/k10.pem`` unless ``--agent-key`` names another;
it signs its binding to (operator, agent) and the master device approves the registration with
its K10 and the passkey. The operator's wallet sends the transaction (sovereign mode).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agentkeys.chain import ROLE_CAP_MINT, NewAgent
from agentkeys.cli._common import (
    DeviceK10Signer,
    Rejected,
    add_output_options,
    add_session_options,
    emit,
    load_wallet,
    open_session,
    run,
)
from agentkeys.omni import agent_omni, device_key_hash_from_point
from attest.device_key import BackendChoice, open_device_key

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agent create``."""
    agent = sub.add_parser(
        "agent", allow_abbrev=False, help="create agents (each change asks for your passkey)"
    )
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="AGENT_COMMAND", required=True)
    create = agent_sub.add_parser(
        "create",
        allow_abbrev=False,
        help="register a new agent device on chain",
        description="Register an agent (label a-z, 0-9, -; up to 32) with its own device key. "
        "Asks for your passkey and sends the transaction from your wallet.",
    )
    create.add_argument("label", help="agent label, e.g. research-bot")
    create.add_argument(
        "--agent-key",
        type=Path,
        metavar="FILE",
        help="the agent's K10 key file (PEM, 0600); created when absent "
        "(default <home>/agents/<label>/k10.pem)",
    )
    add_session_options(create)
    add_output_options(create)
    create.set_defaults(func=_create)


def _create(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with open_session(args, signing=True) as session:
            wallet = load_wallet(args, session.state.wallet)
            label: str = args.label
            actor = agent_omni(session.state.operator_omni, label)  # checks the label
            key_path = args.agent_key or session.home / "agents" / label / "k10.pem"
            agent_key = await open_device_key(BackendChoice.SOFTWARE, key_path=key_path)
            try:
                signer = DeviceK10Signer(agent_key)
                device_hash = device_key_hash_from_point(signer.public_point)
                existing = await session.chain.get_device(device_hash)
                if existing is not None:
                    raise Rejected(
                        f"the agent key {key_path} is already registered "
                        f"(device {device_hash}); use a new --agent-key"
                    )
                proof = await session.chain.k10_binding_proof(
                    signer, session.state.operator_omni, actor
                )
            finally:
                await agent_key.aclose()
            mutation = await session.chain.prepare_add_agent_device(
                session.state.operator_omni,
                NewAgent(label=label, k10_point=signer.public_point, roles=ROLE_CAP_MINT),
                proof,
                session.authority("agent create", ("Agent", label), ("Agent device", device_hash)),
            )
            receipt = await session.chain.submit(mutation, wallet)
            device = await session.chain.get_device(device_hash)
            registered = device is not None and not device.revoked
            emit(
                args,
                {
                    "tx_hash": receipt.tx_hash,
                    "block_number": receipt.block_number,
                    "label": label,
                    "agent_omni": actor,
                    "device_key_hash": device_hash,
                    "agent_key_file": str(key_path),
                    "registered": registered,
                },
                [
                    f"agent {label} created",
                    f"  agent_omni       {actor}",
                    f"  device_key_hash  {device_hash}",
                    f"  agent key file   {key_path}",
                    f"  tx               {receipt.tx_hash} (block {receipt.block_number})",
                    f"next: agentkeys scope add {label} <service…>",
                ],
            )

    return run(args, command)
