"""``agentkeys session status|renew|revoke``: the operator's broker session (the home's J1).

``init`` keeps the J1 in the home (``session.jwt`` + ``session.json``, agentkeys.cli._bootstrap);
relayed mutations (agentkeys.cli._relay) and the daemon present it. ``status`` asks the broker
what it says of it (``GET /v1/auth/session``: valid, or expired / revoked / invalid there) and
prints its subject, wallet, email, expiry and time left. ``renew`` signs in again the way this
operator signs in (``master_wallet`` in operator.json, written by ``init``): the email link,
then the passkey with SIWE by the operator's own wallet, or, for an email-only operator, the
signer-held K4 (the bootstrap stages 1 and 3 of ``init``; the passkey is already enrolled), and
replaces the stored session. ``revoke`` has the broker refuse the session from now on (the files
stay, so ``status`` reports it revoked until ``renew``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx

from agentkeys.b64url import b64url_decode
from agentkeys.cli._bootstrap import (
    BrokerSignIn,
    SessionRecord,
    load_session,
    write_session,
)
from agentkeys.cli._errors import BrokerSessionRefused, NoSession, Rejected, UsageError
from agentkeys.cli._operator_session import add_session_options, assertion_json, passkey_for
from agentkeys.cli._operator_state import (
    K4_WALLET,
    OWN_WALLET,
    OperatorState,
    agentkeys_home,
    load_operator_state,
)
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._secrets import load_wallet, wallet_given
from agentkeys.cli.init import add_maildir_option, email_stage
from agentkeys.clients import SessionInfo
from agentkeys.passkey_page import PagePasskey

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``session status``, ``session renew`` and ``session revoke``."""
    session = sub.add_parser(
        "session", allow_abbrev=False, help="show, renew or revoke your broker session"
    )
    session_sub = session.add_subparsers(
        dest="session_command", metavar="SESSION_COMMAND", required=True
    )
    status = session_sub.add_parser(
        "status",
        allow_abbrev=False,
        help="what the broker says of your session (exit 3 unless valid)",
        epilog="example: agentkeys session status --json",
    )
    add_session_options(status, passkey=False)
    add_output_options(status)
    status.set_defaults(func=_status)
    renew = session_sub.add_parser(
        "renew",
        allow_abbrev=False,
        help="sign in again: email link, then passkey (and your wallet's SIWE)",
        description="Sign in again the way this operator signs in: the email link, then the "
        "passkey with your wallet (SIWE; pass the wallet option) or, for an email-only "
        "operator, the signer-held K4; replaces the stored session.",
        epilog="example: agentkeys session renew",
    )
    renew.add_argument("--email", help="your email address (default: the one `init` recorded)")
    renew.add_argument(
        "--broker-url",
        help="the broker (default: the stored session's, else $AGENTKEYS_DEV_BROKER_URL)",
    )
    add_maildir_option(renew)
    add_session_options(renew)
    add_output_options(renew)
    renew.set_defaults(func=_renew)
    revoke = session_sub.add_parser(
        "revoke",
        allow_abbrev=False,
        help="have the broker refuse your session from now on",
        epilog="example: agentkeys session revoke",
    )
    add_session_options(revoke, passkey=False)
    add_output_options(revoke)
    revoke.set_defaults(func=_revoke)


def _left(seconds: int) -> str:
    if seconds <= 0:
        return "none"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _data(
    state: OperatorState,
    record: SessionRecord,
    status: str,
    info: SessionInfo | None = None,
    *,
    stage: object = None,
) -> dict[str, object]:
    """What ``session`` shows: the broker's view (``info``) over the home's record."""
    expires_at = record.expires_at if info is None else info.expires_at
    kind = state.master_wallet
    signs_in_with = None if kind is None else {K4_WALLET: "email", OWN_WALLET: "wallet"}[kind]
    return {
        "status": status,
        "stage": stage if info is None else info.stage,
        "actor_omni": record.actor_omni if info is None else info.subject,
        "wallet": (info.wallet if info is not None else None) or record.wallet,
        "email": state.email,
        "signs_in_with": signs_in_with,
        "expires_at": expires_at,
        "seconds_left": max(0, expires_at - int(time.time())),
        "broker_url": record.broker_url,
    }


def _lines(data: Mapping[str, object]) -> list[str]:
    expires = int(str(data["expires_at"]))
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
    how = {"email": "email link + passkey (K4 wallet)", "wallet": "wallet (SIWE) + passkey"}
    return [
        f"session     {data['status']}" + (f" ({data['stage']})" if data["stage"] else ""),
        f"actor_omni  {data['actor_omni']}",
        f"wallet      {data['wallet']}",
        f"email       {data['email'] or 'unknown'}",
        f"signs in    {how.get(str(data['signs_in_with']), 'unknown')}",
        f"expires     {when} (left: {_left(int(str(data['seconds_left'])))})",
        f"broker      {data['broker_url']}",
    ]


def _status(args: argparse.Namespace) -> int:
    async def command() -> None:
        home = agentkeys_home(args.home)
        state = load_operator_state(home)
        record = load_session(home, allow_expired=True)
        info: SessionInfo | None = None
        status = "valid"
        refusal: BrokerSessionRefused | None = None
        async with httpx.AsyncClient(base_url=record.broker_url, trust_env=False) as http:
            try:
                info = await BrokerSignIn(http).session_info(record.token)
            except BrokerSessionRefused as exc:
                refusal = exc
                status = str(exc.code).removeprefix("session_")
        data = _data(state, record, status, info)
        emit(args, data, _lines(data))
        if refusal is not None:
            raise NoSession(
                f"the broker says the session is {status}; sign in again: `agentkeys session renew`"
            )

    return run(args, command)


def _renew(args: argparse.Namespace) -> int:
    async def command() -> None:
        home = agentkeys_home(args.home)
        state = load_operator_state(home)
        try:
            previous: SessionRecord | None = load_session(home, allow_expired=True)
        except NoSession:
            previous = None
        address = args.email or state.email
        if not address:
            raise UsageError("this home does not record your email: pass --email ADDRESS")
        broker_url = (
            args.broker_url
            or (previous.broker_url if previous is not None else None)
            or os.environ.get("AGENTKEYS_DEV_BROKER_URL")
        )
        if not broker_url:
            raise UsageError("no broker: pass --broker-url")
        own = wallet_given(args) or state.master_wallet == OWN_WALLET
        wallet = load_wallet(args, state.wallet) if own else None
        passkey = passkey_for(args, state.passkey)
        if isinstance(passkey, PagePasskey):
            passkey.purpose = "Sign in to agentkeys with your passkey."
            passkey.details = (
                ("Operation", "session renew (sign in)"),
                ("Operator", state.operator_omni),
                ("Email", str(address)),
            )

        async def assert_(options: Mapping[str, Any]) -> Mapping[str, Any]:
            challenge = b64url_decode(str(options["challenge"]))
            signed = await passkey.get_assertion(challenge)
            return assertion_json(state.passkey.credential_id, signed)

        async with httpx.AsyncClient(base_url=broker_url, trust_env=False, timeout=30) as http:
            signin = BrokerSignIn(http)
            j0 = await email_stage(args, signin, str(address))
            if wallet is None:
                answer = await signin.siwe_k4(j0, assert_)
            else:
                answer = await signin.siwe(j0, wallet, assert_)
            if answer.get("actor_omni") != state.operator_omni:
                await signin.session_revoke(str(answer["session"]))  # never kept: end it
                raise Rejected(
                    f"{address} signs in as another operator ({answer.get('actor_omni')}), not "
                    f"{state.operator_omni}; nothing was replaced"
                )
        record = write_session(home, answer, broker_url)
        data = _data(state, record, "valid", stage=answer.get("stage"))
        emit(args, data, ["session renewed", *_lines(data)])

    return run(args, command)


def _revoke(args: argparse.Namespace) -> int:
    async def command() -> None:
        home = agentkeys_home(args.home)
        state = load_operator_state(home)
        record = load_session(home, allow_expired=True)
        async with httpx.AsyncClient(base_url=record.broker_url, trust_env=False) as http:
            await BrokerSignIn(http).session_revoke(record.token)
        data = _data(state, record, "revoked")
        emit(args, data, ["session revoked (sign in again: `agentkeys session renew`)"])

    return run(args, command)
