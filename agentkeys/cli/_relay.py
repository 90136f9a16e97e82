"""Who sends a master mutation: the operator's wallet, or the broker's relay (SPEC 1, 6).

With ``--wallet-keystore`` / ``--wallet-key-file`` the operator's own wallet sends the
transaction (sovereign; an operator whose own wallet is the master must pass it unless it
opted into hosted relay, ``"submit": "relay"`` in operator.json). Without one
(an email-only operator, whose master wallet is the signer-held K4, has none) the command
hands this master device's K10 signature and passkey assertion, with the J1 session kept in
the home, to the broker's ``/v1/relay/<route>``; the broker verifies both against the chain
before paying gas and the contract verifies them again. The sender is chosen before anything
is signed, so a missing session fails without a passkey prompt.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from agentkeys.chain import SignedMutation
from agentkeys.cli._bootstrap import BrokerSignIn, SessionRecord, load_session
from agentkeys.cli._errors import CliError, NoSession, SecretUnavailable
from agentkeys.cli._operator_session import OperatorSession
from agentkeys.cli._operator_state import K4_WALLET, OWN_WALLET
from agentkeys.cli._secrets import load_wallet, wallet_given

__all__ = ["Sender", "send", "sender_for"]

Sender = LocalAccount | SessionRecord


def sender_for(args: argparse.Namespace, session: OperatorSession) -> Sender:
    """The operator's wallet when one is given, else (an email-only operator, an operator who
    opted into hosted relay with ``"submit": "relay"``, or a home that does not say) the J1
    session for the broker's relay.

    Raises:
        SecretUnavailable: no wallet given though this operator's own wallet is the master
            (``master_wallet`` ``own`` in operator.json) and it did not opt into the relay, or
            neither a wallet nor a session; or the wallet given is unusable.
        WalletMismatch: the wallet given is not the master's.
        NoSession: an email-only operator without a live session (``agentkeys session renew``).
    """
    if wallet_given(args):
        return load_wallet(args, session.state.wallet)
    kind = session.state.master_wallet
    if kind == OWN_WALLET and session.state.submit != "relay":
        raise SecretUnavailable(
            "your own wallet sends this change: pass --wallet-keystore FILE or "
            "--wallet-key-file FILE"
        )
    try:
        return load_session(session.home)
    except NoSession:
        if kind == K4_WALLET:
            raise
        raise SecretUnavailable(
            "no wallet to send the change and no broker session for the relay: pass "
            "--wallet-keystore FILE or --wallet-key-file FILE, or sign in again "
            "(`agentkeys session renew`)"
        ) from None


async def send(
    session: OperatorSession,
    sender: Sender,
    mutation: SignedMutation,
    route: str,
    fields: Mapping[str, Any],
) -> tuple[str, int]:
    """Send ``mutation`` from the wallet, or its approval and ``fields`` to the relay's
    ``route`` → (tx hash, block number)."""
    if isinstance(sender, LocalAccount):
        receipt = await session.chain.submit(mutation, sender)
        return receipt.tx_hash, receipt.block_number
    if session.recorded is None:
        raise CliError("internal: nothing was signed for the relay")
    body = {
        "operator_omni": session.state.operator_omni,
        "device_key_hash": session.state.device_key_hash,
        **session.recorded.relay_fields(),
        **fields,
    }
    async with httpx.AsyncClient(base_url=sender.broker_url, trust_env=False, timeout=60) as http:
        answer = await BrokerSignIn(http).relay(sender.token, route, body)
    return str(answer["tx_hash"]), int(answer.get("block_number", 0))
