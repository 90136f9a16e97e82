"""``agentkeys whoami``: who this machine acts for (SPEC.md section 7).

Prints the master wallet beside its ``agentkeys_actor_omni``, this device's
``device_key_hash`` and K10 backend, the passkey's rpId, the broker session's expiry, the
chain profile and, unless
``--offline``, what the chain says about the device.
"""

from __future__ import annotations

import argparse
import time

from agentkeys.chain import Tier
from agentkeys.cli._bootstrap import load_session
from agentkeys.cli._errors import NoSession
from agentkeys.cli._operator_session import add_session_options, open_session
from agentkeys.cli._operator_state import agentkeys_home, load_operator_state
from agentkeys.cli._output import add_output_options, emit, run

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``whoami``."""
    whoami = sub.add_parser(
        "whoami",
        epilog="example: agentkeys whoami --offline",
        allow_abbrev=False,
        help="the operator, wallet and device this machine uses",
    )
    whoami.add_argument("--offline", action="store_true", help="do not ask the chain")
    add_session_options(whoami, passkey=False)
    add_output_options(whoami)
    whoami.set_defaults(func=_whoami)


def _whoami(args: argparse.Namespace) -> int:
    async def command() -> None:
        home = agentkeys_home(args.home)
        state = load_operator_state(home)
        data: dict[str, object] = {
            "wallet": state.wallet,
            "agentkeys_actor_omni": state.operator_omni,
            "device_key_hash": state.device_key_hash,
            "k10_backend": state.k10_backend,
            "passkey_rp_id": state.passkey.rp_id,
            "dev_passkey": state.passkey.dev_key_file is not None,
            "submit": state.submit,
            "home": str(home),
            "session": None,
        }
        session_line = "none (sign in: `agentkeys session renew`)"
        try:
            j1 = load_session(home, allow_expired=True)
        except NoSession:
            j1 = None
        if j1 is not None:
            data["session"] = {
                "broker_url": j1.broker_url,
                "expires_at": j1.expires_at,
                "expired": j1.expired,
            }
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(j1.expires_at))
            state_word = "EXPIRED" if j1.expired else "expires"
            session_line = f"J1 at {j1.broker_url}, {state_word} {when}"
        lines = [
            f"wallet                {state.wallet}",
            f"agentkeys_actor_omni  {state.operator_omni}",
            f"device                {state.device_key_hash} (K10: {state.k10_backend})",
            f"passkey               rpId {state.passkey.rp_id}"
            + (" (development passkey)" if state.passkey.dev_key_file is not None else ""),
            f"broker session        {session_line}",
        ]
        if not args.offline:
            async with open_session(args, signing=False) as session:
                device = await session.chain.get_device(state.device_key_hash)
                if device is None:
                    chain_state = "not registered"
                elif device.revoked:
                    chain_state = "revoked"
                else:
                    tier = "master" if device.tier == Tier.MASTER else "agent"
                    chain_state = f"registered {tier}, roles {device.roles}"
                data.update(chain=session.chain_name, device_on_chain=chain_state)
                lines.append(f"chain                 {session.chain_name}: device {chain_state}")
        emit(args, data, lines)

    return run(args, command)
