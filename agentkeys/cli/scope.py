"""``agentkeys scope add|remove <agent> <service…> [--read-only]`` (SPEC.md sections 6 and 7).

The chain holds one scope per (operator, agent): a set of services and one ``read_only`` flag.
``add`` merges the services into it (and sets the flag as given); ``remove`` takes services
out, and revokes the whole entry when none would remain (or with ``--all``). Each change is
signed by the master device's K10 and approved with the passkey, then sent from the
operator's wallet or, without a wallet option, by the broker's relay (agentkeys.cli._relay;
how an email-only operator changes scope); the command prints the transaction and the
resulting scope.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from agentkeys.chain import ScopeEntry
from agentkeys.cli._arguments import service_arg
from agentkeys.cli._errors import Rejected, UsageError
from agentkeys.cli._names import known_names, remember_names
from agentkeys.cli._operator_session import OperatorSession, add_session_options, open_session
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._relay import send, sender_for
from agentkeys.errors import InvalidIdentifier
from agentkeys.omni import agent_omni, normalize_hex32, normalize_service, service_hash

__all__ = ["register", "resolve_agent"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scope add`` and ``scope remove``."""
    scope = sub.add_parser("scope", allow_abbrev=False, help="grant or remove an agent's services")
    scope_sub = scope.add_subparsers(dest="scope_command", metavar="SCOPE_COMMAND", required=True)
    add = scope_sub.add_parser(
        "add",
        epilog="example: agentkeys scope add research-bot openai github --read-only",
        allow_abbrev=False,
        help="let an agent use services (asks for your passkey)",
    )
    add.add_argument("agent", help="agent label (or its 64-hex agent_omni)")
    add.add_argument(
        "services",
        nargs="+",
        type=service_arg,
        metavar="service",
        help="service names, e.g. openai",
    )
    add.add_argument(
        "--read-only", action="store_true", help="the agent may only read these credentials"
    )
    remove = scope_sub.add_parser(
        "remove",
        epilog="example: agentkeys scope remove research-bot github",
        allow_abbrev=False,
        help="take services away (asks for your passkey)",
    )
    remove.add_argument("agent", help="agent label (or its 64-hex agent_omni)")
    remove.add_argument(
        "services", nargs="*", type=service_arg, metavar="service", help="services to remove"
    )
    remove.add_argument("--all", action="store_true", help="remove the agent's whole scope")
    show = scope_sub.add_parser(
        "show",
        epilog="example: agentkeys scope show research-bot --json",
        allow_abbrev=False,
        help="print an agent's scope from the chain",
    )
    show.add_argument("agent", help="agent label (or its 64-hex agent_omni)")
    for parser in (add, remove):
        add_session_options(parser)
        add_output_options(parser)
    add_session_options(show, passkey=False)
    add_output_options(show)
    add.set_defaults(func=_add)
    remove.set_defaults(func=_remove)
    show.set_defaults(func=_show)


async def resolve_agent(session: OperatorSession, agent: str) -> tuple[str, str]:
    """(label or "", agent_omni) of an agent that has a live device of this operator.

    Raises:
        Rejected: no live agent device with that label/omni.
    """
    try:
        actor, label = normalize_hex32(agent), ""
    except InvalidIdentifier:
        actor, label = agent_omni(session.state.operator_omni, agent), agent
    if actor == session.state.operator_omni:
        raise Rejected("that is the operator itself, not an agent")
    for event in await session.registered_devices(actor):
        device = await session.chain.get_device(event.device_key_hash)
        if device is not None and not device.revoked:
            return label, actor
    raise Rejected(
        f"unknown agent {agent!r} (no live device on chain); create it with "
        "`agentkeys agent create <label>`"
    )


def _relay_fields(actor: str, services: list[str] | None, read_only: bool) -> dict[str, object]:
    """The scope of ``/v1/relay/scope``: ``services`` as hashes, ``None`` revokes."""
    return {
        "agent_omni": actor,
        "service_hashes": services or [],
        "read_only": read_only,
        "revoke": services is None,
    }


def _services(names: Sequence[str]) -> dict[str, str]:
    """hash hex → name, validating the names."""
    return {service_hash(n).hex(): normalize_service(n) for n in names}


def _scope_data(
    label: str, actor: str, entry: ScopeEntry | None, names: dict[str, str]
) -> dict[str, object]:
    services = [] if entry is None else [names.get(h, h) for h in entry.services]
    return {
        "agent": label or actor,
        "agent_omni": actor,
        "services": sorted(services),
        "read_only": None if entry is None else entry.read_only,
        "updated_at": None if entry is None else entry.updated_at,
    }


def _mode(read_only: object) -> str:
    return "read-only" if read_only else "read-write"


def _scope_lines(data: dict[str, object]) -> list[str]:
    services = data["services"]
    if not isinstance(services, list) or not services:
        return [f"scope of {data['agent']}: none"]
    mode = _mode(data["read_only"])
    return [f"scope of {data['agent']}: {', '.join(str(s) for s in services)} ({mode})"]


def _add(args: argparse.Namespace) -> int:
    async def command() -> None:
        wanted = _services(args.services)
        async with open_session(args, signing=True) as session:
            remember_names(session.home, wanted)
            sender = sender_for(args, session)
            label, actor = await resolve_agent(session, args.agent)
            current = await session.chain.get_scope(session.state.operator_omni, actor)
            have = set() if current is None else set(current.services)
            read_only: bool = args.read_only
            if current is not None and set(wanted) <= have and current.read_only == read_only:
                raise Rejected(
                    f"{', '.join(sorted(wanted.values()))} already in {args.agent}'s scope "
                    "with that mode; nothing to change"
                )
            merged = sorted(have | set(wanted))
            authority = session.authority(
                "scope add",
                ("Agent", args.agent),
                ("Services", ", ".join(sorted(wanted.values()))),
                ("Mode", _mode(read_only)),
            )
            mutation = await session.chain.prepare_set_scope(
                session.state.operator_omni,
                actor,
                [bytes.fromhex(h) for h in merged],
                read_only,
                authority,
            )
            tx, block = await send(
                session, sender, mutation, "scope", _relay_fields(actor, merged, read_only)
            )
            entry = await session.chain.get_scope(session.state.operator_omni, actor)
            data = _scope_data(label, actor, entry, {**known_names(session.home), **wanted})
            data.update(tx_hash=tx, block_number=block)
            emit(args, data, [*_scope_lines(data), f"tx {tx}"])

    return run(args, command)


def _remove(args: argparse.Namespace) -> int:
    async def command() -> None:
        if not args.services and not args.all:
            raise UsageError("name the services to remove, or pass --all")
        unwanted = _services(args.services)
        async with open_session(args, signing=True) as session:
            remember_names(session.home, unwanted)
            sender = sender_for(args, session)
            label, actor = await resolve_agent(session, args.agent)
            current = await session.chain.get_scope(session.state.operator_omni, actor)
            if current is None:
                raise Rejected(f"{args.agent} has no scope; nothing to remove")
            have = set(current.services)
            missing = sorted(name for h, name in unwanted.items() if h not in have)
            if missing:
                raise Rejected(f"{', '.join(missing)} not in {args.agent}'s scope")
            remaining = [] if args.all else sorted(have - set(unwanted))
            removed = "all" if args.all else ", ".join(sorted(unwanted.values()))
            authority = session.authority(
                "scope remove" if remaining else "scope remove (revokes the whole scope)",
                ("Agent", args.agent),
                ("Services", removed),
                ("Mode", _mode(current.read_only)),
            )
            if remaining:
                mutation = await session.chain.prepare_set_scope(
                    session.state.operator_omni,
                    actor,
                    [bytes.fromhex(h) for h in remaining],
                    current.read_only,
                    authority,
                )
            else:
                mutation = await session.chain.prepare_revoke_scope(
                    session.state.operator_omni, actor, authority
                )
            tx, block = await send(
                session,
                sender,
                mutation,
                "scope",
                _relay_fields(actor, remaining or None, current.read_only),
            )
            entry = await session.chain.get_scope(session.state.operator_omni, actor)
            data = _scope_data(label, actor, entry, {**known_names(session.home), **unwanted})
            data.update(tx_hash=tx, block_number=block)
            emit(args, data, [*_scope_lines(data), f"tx {tx}"])

    return run(args, command)


def _show(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with open_session(args, signing=False) as session:
            label, actor = await resolve_agent(session, args.agent)
            entry = await session.chain.get_scope(session.state.operator_omni, actor)
            data = _scope_data(label, actor, entry, known_names(session.home))
            emit(args, data, _scope_lines(data))

    return run(args, command)
