"""Secrets the command line reads: from a file (0600, ours), stdin or a prompt, never argv.

:func:`read_secret` reads one; :func:`load_wallet` opens the operator's wallet from a
keystore (and its password) or a key file (``--wallet-keystore`` / ``--wallet-key-file``,
:func:`add_wallet_options`). Secrets never appear in messages.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from agentkeys.cli._errors import SecretUnavailable, WalletMismatch
from agentkeys.config import check_private_file

__all__ = [
    "add_wallet_options",
    "load_wallet",
    "read_secret",
    "wallet_given",
]


def read_secret(*, path: Path | None, use_stdin: bool, prompt: str, what: str) -> bytes:
    """A secret from a file (0600, ours), stdin (first line) or a terminal prompt.

    Raises:
        SecretUnavailable: nothing usable (empty, unreadable, no terminal).
        InsecureFileError: the file is readable by others.
    """
    if path is not None:
        check_private_file(path)
        try:
            data = path.read_bytes()
        except OSError:
            raise SecretUnavailable(f"cannot read the {what} file {path}") from None
    elif use_stdin:
        data = sys.stdin.buffer.readline()
    else:
        if not sys.stdin.isatty():
            raise SecretUnavailable(
                f"no {what} given; pass a file (0600) or --{what.replace(' ', '-')}-stdin"
            )
        data = getpass.getpass(prompt).encode()
    secret = data.strip()
    if not secret:
        raise SecretUnavailable(f"the {what} is empty")
    return secret


def add_wallet_options(parser: argparse.ArgumentParser) -> None:
    """Sovereign submission: the operator's wallet from a keystore or key file (not argv)."""
    group = parser.add_argument_group("wallet (sovereign mode: your wallet sends the tx)")
    group.add_argument(
        "--wallet-keystore",
        type=Path,
        metavar="FILE",
        help="encrypted JSON keystore of the operator's wallet",
    )
    group.add_argument(
        "--wallet-key-file",
        type=Path,
        metavar="FILE",
        help="file (0600) holding the wallet's hex private key",
    )
    group.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file (0600) holding the keystore password (else prompt)",
    )
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the keystore password from the first line of stdin",
    )


def wallet_given(args: argparse.Namespace) -> bool:
    """Whether ``--wallet-keystore`` or ``--wallet-key-file`` was passed."""
    return (
        getattr(args, "wallet_keystore", None) is not None
        or getattr(args, "wallet_key_file", None) is not None
    )


def load_wallet(args: argparse.Namespace, expected: str | None) -> LocalAccount:
    """The operator's wallet, from ``--wallet-keystore`` or ``--wallet-key-file``.

    Raises:
        SecretUnavailable: neither given, or the key/password is unusable.
        WalletMismatch: the wallet is not ``expected`` (the master wallet on record).
    """
    keystore: Path | None = getattr(args, "wallet_keystore", None)
    key_file: Path | None = getattr(args, "wallet_key_file", None)
    if keystore is not None and key_file is not None:
        raise SecretUnavailable("give --wallet-keystore or --wallet-key-file, not both")
    key: bytes | str
    if keystore is not None:
        try:
            encrypted = json.loads(keystore.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise SecretUnavailable(f"cannot read the keystore {keystore}") from None
        password = read_secret(
            path=args.password_file,
            use_stdin=args.password_stdin,
            prompt=f"Password for {keystore.name}: ",
            what="password",
        )
        try:
            key = bytes(Account.decrypt(encrypted, password.decode()))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise SecretUnavailable("the keystore did not open (wrong password?)") from None
    elif key_file is not None:
        text = read_secret(path=key_file, use_stdin=False, prompt="", what="wallet key")
        try:
            key = text.decode("ascii")
        except UnicodeDecodeError:
            raise SecretUnavailable("the wallet key file must hold the key as hex text") from None
    else:
        raise SecretUnavailable(
            "no wallet to send the transaction; pass --wallet-keystore FILE or "
            "--wallet-key-file FILE (create one with `agentkeys wallet create`)"
        )
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError):
        raise SecretUnavailable("the wallet key is not a secp256k1 private key") from None
    if expected is not None and account.address.lower() != expected.lower():
        raise WalletMismatch(
            f"wallet {account.address} is not the operator's master wallet {expected}"
        )
    return account
