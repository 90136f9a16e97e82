"""``agentkeys wallet create``: a new operator wallet in an encrypted JSON keystore.

A wallet operator (``init --wallet-keystore``) pays the gas of its master mutations from this
wallet; on the dev stack ``agentkeys dev fund <address>`` gives it test ether.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eth_account import Account

from agentkeys._files import write_private
from agentkeys.cli._errors import Rejected
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._secrets import read_secret

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wallet create``."""
    wallet = sub.add_parser(
        "wallet",
        allow_abbrev=False,
        help="create an operator wallet",
        epilog="example: agentkeys wallet create --keystore wallet.json --password-file pw",
    )
    wallet_sub = wallet.add_subparsers(
        dest="wallet_command", metavar="WALLET_COMMAND", required=True
    )
    create = wallet_sub.add_parser(
        "create",
        allow_abbrev=False,
        help="new wallet in an encrypted keystore (0600)",
        epilog="example: agentkeys wallet create --keystore wallet.json --password-file pw",
    )
    create.add_argument(
        "--keystore", type=Path, required=True, metavar="FILE", help="keystore to write (new)"
    )
    create.add_argument(
        "--password-file", type=Path, metavar="FILE", help="file (0600) holding the password"
    )
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    add_output_options(create)
    create.set_defaults(func=_create)


def _create(args: argparse.Namespace) -> int:
    async def command() -> None:
        password = read_secret(
            path=args.password_file,
            use_stdin=args.password_stdin,
            prompt="Password for the new keystore: ",
            what="password",
        )
        account = Account.create()
        keystore = Account.encrypt(account.key, password.decode())
        try:
            write_private(args.keystore, json.dumps(keystore), exclusive=True)
        except FileExistsError:
            raise Rejected(f"{args.keystore} exists; choose a new keystore file") from None
        emit(
            args,
            {"address": account.address, "keystore": str(args.keystore)},
            [
                f"wallet {account.address} in {args.keystore}",
                f"fund it before use (dev stack: `agentkeys dev fund {account.address}`)",
            ],
        )

    return run(args, command)
