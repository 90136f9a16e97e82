"""``agentkeys device register|revoke|list`` (SPEC.md sections 6, 7 and 9).

``device register [--upgrade-from-v1]`` lives in agentkeys.cli.init (it shares the master
registration with ``init``, sovereign or, for an email identity's K4 wallet, through the
broker's relay).

Revocation is final. It is signed by this master device's K10 and approved with the passkey,
and sent from the operator's wallet or, without a wallet option, by the broker's relay
(agentkeys.cli._relay: how an email-only operator revokes). Revoking this very device needs
``--this-device`` (when it is the last master, the operator can make no further changes:
recovery is outside stage 1).
"""

from __future__ import annotations

import argparse

from agentkeys.chain import DeviceEntry, Tier
from agentkeys.cli._errors import Rejected
from agentkeys.cli._operator_session import OperatorSession, add_session_options, open_session
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._relay import Sender, send, sender_for
from agentkeys.cli.init import register_device_command
from agentkeys.errors import InvalidIdentifier
from agentkeys.omni import normalize_hex32

__all__ = ["register", "revoke_device"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``device register``, ``device revoke`` and ``device list``."""
    device = sub.add_parser(
        "device", allow_abbrev=False, help="list or revoke this operator's devices"
    )
    device_sub = device.add_subparsers(
        dest="device_command", metavar="DEVICE_COMMAND", required=True
    )
    revoke = device_sub.add_parser(
        "revoke",
        epilog="example: agentkeys device revoke <device_key_hash> --wallet-key-file wallet.key "
        "(the hash from `agentkeys device list`)",
        allow_abbrev=False,
        help="revoke a device for good (asks for your passkey)",
    )
    revoke.add_argument("device_key_hash", help="the device's 64-hex device_key_hash")
    revoke.add_argument(
        "--this-device",
        action="store_true",
        help="allow revoking the master device this command runs on",
    )
    add_session_options(revoke)
    add_output_options(revoke)
    revoke.set_defaults(func=_revoke)
    register_cmd = device_sub.add_parser(
        "register",
        epilog="example: agentkeys device register --upgrade-from-v1 "
        "--legacy-email you@example.com",
        allow_abbrev=False,
        help="register this device as the master (--upgrade-from-v1: a legacy operator)",
        description="Enroll K11 and register this device as the operator's master device; "
        "with --upgrade-from-v1, record the legacy identity and print the migration steps. "
        "Without a wallet option the master wallet is the signer-held K4 of --legacy-email: "
        "the command signs in to the broker and registers through its relay.",
    )
    register_device_command(register_cmd)
    listing = device_sub.add_parser(
        "list",
        epilog="example: agentkeys device list --json",
        allow_abbrev=False,
        help="the operator's devices on chain",
    )
    add_session_options(listing, passkey=False)
    add_output_options(listing)
    listing.set_defaults(func=_list)


def _device_data(entry: DeviceEntry, label: str | None = None) -> dict[str, object]:
    return {
        "device_key_hash": entry.device_key_hash,
        "actor_omni": entry.actor_omni,
        "tier": "master" if entry.tier == Tier.MASTER else "agent",
        "label": label,
        "roles": entry.roles,
        "revoked": entry.revoked,
        "registered_at": entry.registered_at,
    }


async def _owned_device(session: OperatorSession, text: str) -> DeviceEntry:
    try:
        key = normalize_hex32(text)
    except InvalidIdentifier:
        raise Rejected(
            "a device_key_hash is 64 hex characters (see `agentkeys device list`)"
        ) from None
    entry = await session.chain.get_device(key)
    if entry is None or entry.operator_omni != session.state.operator_omni:
        raise Rejected(f"no device {key} of this operator; see `agentkeys device list`")
    return entry


async def revoke_device(
    session: OperatorSession,
    sender: Sender,
    entry: DeviceEntry,
    operation: str = "device revoke",
) -> tuple[dict[str, object], list[str]]:
    """Revoke ``entry`` on chain (K10 + passkey; the wallet or the relay sends): its data and
    text lines.

    The passkey page names ``operation``, the device and its actor.
    """
    authority = session.authority(
        operation,
        ("Device to revoke", entry.device_key_hash),
        ("Its actor", entry.actor_omni),
    )
    mutation = await session.chain.prepare_revoke_device(
        session.state.operator_omni, entry.device_key_hash, authority
    )
    tx, block = await send(
        session,
        sender,
        mutation,
        "device-revoke",
        {"revoke_device_key_hash": entry.device_key_hash},
    )
    after = await session.chain.get_device(entry.device_key_hash)
    data = _device_data(after if after is not None else entry)
    data.update(tx_hash=tx, block_number=block)
    state = "revoked" if data["revoked"] else "NOT revoked"
    return data, [f"device {entry.device_key_hash} {state}", f"tx {tx} (block {block})"]


def _revoke(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with open_session(args, signing=True) as session:
            sender = sender_for(args, session)
            entry = await _owned_device(session, args.device_key_hash)
            if entry.revoked:
                raise Rejected(f"device {entry.device_key_hash} is already revoked")
            if entry.device_key_hash == session.state.device_key_hash and not args.this_device:
                raise Rejected("that is this master device; pass --this-device to revoke it anyway")
            data, lines = await revoke_device(session, sender, entry)
            emit(args, data, lines)

    return run(args, command)


def _list(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with open_session(args, signing=False) as session:
            rows: list[dict[str, object]] = []
            for event in await session.registered_devices():
                entry = await session.chain.get_device(event.device_key_hash)
                if entry is not None:
                    rows.append(_device_data(entry))
            lines = [
                f"{r['device_key_hash']}  {r['tier']:<6}  "
                f"{'revoked' if r['revoked'] else 'live':<7}  actor {r['actor_omni']}"
                for r in rows
            ]
            emit(args, {"devices": rows}, lines or ["no devices"])

    return run(args, command)
