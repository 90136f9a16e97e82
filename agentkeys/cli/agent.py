"""``agentkeys agent create <label>``: register an agent device, approved by K10 + passkey.

SPEC.md sections 6 and 7. The agent's own K10 (the key its sidecar will prove possession with)
is a software key file, ``<home>/agents/<label>/k10.pem`` unless ``--agent-key`` names another;
it signs its binding to (operator, agent) and the master device approves the registration with
its K10 and the passkey. The operator's wallet sends the transaction (sovereign mode) or,
without a wallet option, the broker's relay does (agentkeys.cli._relay: an email-only operator).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from agentkeys.chain import ROLE_CAP_MINT, DeviceEntry, NewAgent
from agentkeys.cli._arguments import label_arg
from agentkeys.cli._errors import Rejected
from agentkeys.cli._names import known_names
from agentkeys.cli._operator_session import (
    DeviceK10Signer,
    OperatorSession,
    add_session_options,
    open_session,
)
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._relay import send, sender_for
from agentkeys.cli.device import revoke_device
from agentkeys.errors import FormatError
from agentkeys.omni import agent_omni, device_key_hash_from_point
from attest.device_key import BackendChoice, open_device_key

__all__ = ["AgentDevice", "ensure_agent_device", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agent create``, ``agent list`` and ``agent revoke``."""
    agent = sub.add_parser(
        "agent",
        allow_abbrev=False,
        help="create, list or revoke agents (changes ask for your passkey)",
    )
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="AGENT_COMMAND", required=True)
    create = agent_sub.add_parser(
        "create",
        epilog="example: agentkeys agent create research-bot --wallet-key-file wallet.key",
        allow_abbrev=False,
        help="register a new agent device on chain",
        description="Register an agent (label a-z, 0-9, -; up to 32) with its own device key. "
        "Asks for your passkey; your wallet sends the transaction or, without a wallet "
        "option, the broker's relay does (an email-only operator).",
    )
    create.add_argument("label", type=label_arg, help="agent label, e.g. research-bot")
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
    listing = agent_sub.add_parser(
        "list",
        allow_abbrev=False,
        help="this operator's agents on chain, with their scope",
        epilog="example: agentkeys agent list --json",
    )
    add_session_options(listing, passkey=False)
    add_output_options(listing)
    listing.set_defaults(func=_list)
    revoke = agent_sub.add_parser(
        "revoke",
        allow_abbrev=False,
        help="revoke every live device of an agent (asks for your passkey)",
        description="Revoke an agent's devices for good; its caps stop at once and a daemon "
        "acting for it refuses from the chain event on.",
        epilog="example: agentkeys agent revoke research-bot --wallet-key-file wallet.key",
    )
    revoke.add_argument("label", type=label_arg, help="the agent's label")
    add_session_options(revoke)
    add_output_options(revoke)
    revoke.set_defaults(func=_revoke)


@dataclass(frozen=True)
class AgentDevice:
    """An agent's K10 registered on chain (by :func:`ensure_agent_device`)."""

    label: str
    agent_omni: str
    device_key_hash: str
    key_file: Path
    registered: bool  # live on chain now
    tx: tuple[str, int] | None  # (tx hash, block) of the registration; None: reused


async def ensure_agent_device(
    args: argparse.Namespace, label: str, key_path: Path | None, *, reuse: bool
) -> AgentDevice:
    """Open (creating when absent) the agent's software K10 and register it for
    (operator, agent) with role CAP_MINT, approved by this master's K10 + passkey and sent
    by the operator's wallet or the broker's relay (``agent create``; ``sidecar setup`` with
    ``reuse``).

    Args:
        key_path: the K10 file (default ``<home>/agents/<label>/k10.pem``).
        reuse: a key already registered and live is returned as it is (no passkey, no
            wallet); otherwise it is refused.

    Raises:
        Rejected: the key is registered already (without ``reuse``), or was revoked.
    """
    async with open_session(args, signing=True) as session:
        actor = agent_omni(session.state.operator_omni, label)  # checks the label
        key_path = key_path or session.home / "agents" / label / "k10.pem"
        agent_key = await open_device_key(BackendChoice.SOFTWARE, key_path=key_path)
        try:
            signer = DeviceK10Signer(agent_key)
            device_hash = device_key_hash_from_point(signer.public_point)
            existing = await session.chain.get_device(device_hash)
            if existing is not None and reuse and not existing.revoked:
                return AgentDevice(label, actor, device_hash, key_path, True, None)
            if existing is not None:
                state = "revoked" if existing.revoked else "already registered"
                raise Rejected(
                    f"the agent key {key_path} is {state} (device {device_hash}); "
                    "use a new --agent-key"
                )
            sender = sender_for(args, session)  # before the passkey is asked for
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
        sent = await send(
            session,
            sender,
            mutation,
            "agent",
            {
                "label": label,
                "agent_k10_public_key": signer.public_point.hex(),
                "agent_k10_proof": proof.hex(),
            },
        )
        device = await session.chain.get_device(device_hash)
        live = device is not None and not device.revoked
        return AgentDevice(label, actor, device_hash, key_path, live, sent)


def _create(args: argparse.Namespace) -> int:
    async def command() -> None:
        label: str = args.label
        made = await ensure_agent_device(args, label, args.agent_key, reuse=False)
        assert made.tx is not None  # reuse=False: registered now or refused
        tx, block = made.tx
        emit(
            args,
            {
                "tx_hash": tx,
                "block_number": block,
                "label": label,
                "agent_omni": made.agent_omni,
                "device_key_hash": made.device_key_hash,
                "agent_key_file": str(made.key_file),
                "registered": made.registered,
            },
            [
                f"agent {label} created",
                f"  agent_omni       {made.agent_omni}",
                f"  device_key_hash  {made.device_key_hash}",
                f"  agent key file   {made.key_file}",
                f"  tx               {tx} (block {block})",
                f"next: agentkeys scope add {label} <service…>",
            ],
        )

    return run(args, command)


def _labels(session: OperatorSession) -> dict[str, str]:
    """agent_omni → label, for the agents this home created (``agents/<label>/``)."""
    found: dict[str, str] = {}
    base = session.home / "agents"
    for child in sorted(base.iterdir()) if base.is_dir() else ():
        try:
            found[agent_omni(session.state.operator_omni, child.name)] = child.name
        except FormatError:
            continue
    return found


async def _agents(session: OperatorSession) -> dict[str, list[DeviceEntry]]:
    """agent_omni → its devices on chain (agents only), in registration order."""
    agents: dict[str, list[DeviceEntry]] = {}
    for event in await session.registered_devices():
        if event.actor_omni == session.state.operator_omni:
            continue
        entry = await session.chain.get_device(event.device_key_hash)
        if entry is not None:
            agents.setdefault(event.actor_omni, []).append(entry)
    return agents


def _list(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with open_session(args, signing=False) as session:
            labels, names = _labels(session), known_names(session.home)
            rows: list[dict[str, object]] = []
            lines: list[str] = []
            for actor, devices in (await _agents(session)).items():
                scope = await session.chain.get_scope(session.state.operator_omni, actor)
                live = [d.device_key_hash for d in devices if not d.revoked]
                services = [] if scope is None else sorted(names.get(h, h) for h in scope.services)
                rows.append(
                    {
                        "label": labels.get(actor),
                        "agent_omni": actor,
                        "live_devices": live,
                        "revoked_devices": len(devices) - len(live),
                        "services": services,
                        "read_only": None if scope is None else scope.read_only,
                    }
                )
                lines.append(
                    f"{labels.get(actor, actor)}  {'live' if live else 'revoked'}  "
                    f"scope: {', '.join(services) or 'none'}"
                )
        emit(args, {"agents": rows}, lines or ["no agents (create one: `agentkeys agent create`)"])

    return run(args, command)


def _revoke(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with open_session(args, signing=True) as session:
            sender = sender_for(args, session)
            actor = agent_omni(session.state.operator_omni, args.label)
            devices = (await _agents(session)).get(actor, [])
            live = [d for d in devices if not d.revoked]
            if not live:
                state = "already revoked" if devices else "unknown"
                raise Rejected(f"agent {args.label} is {state} (no live device on chain)")
            done = [await revoke_device(session, sender, entry) for entry in live]
        lines = [f"agent {args.label} revoked", *(line for _, ls in done for line in ls)]
        emit(args, {"label": args.label, "agent_omni": actor, "devices": [d for d, _ in done]},
             lines)  # fmt: skip

    return run(args, command)
