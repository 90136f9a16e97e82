"""``agentkeys pki``: the development CA and per-role mutual-TLS certificates.

``agentkeys pki init [--dir D]`` creates the CA; ``agentkeys pki issue ROLE
[--dir D] [--name N] [--host H ...] [--replace]`` issues a certificate for
``signer`` (server), ``broker`` or ``worker`` (clients). Files are 0600 in a
0700 directory (default ``$XDG_CONFIG_HOME/agentkeys/pki``); nothing is
overwritten unless ``--replace`` is given. See agentkeys/pki.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentkeys.errors import AgentkeysError
from agentkeys.pki import Role, default_pki_dir, init_ca, issue_certificate, parse_role


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pki = sub.add_parser("pki", help="development CA and mutual-TLS role certificates")
    pki_sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)

    init = pki_sub.add_parser(
        "init", epilog="example: agentkeys pki init --dir pki", help="create the deployment CA"
    )
    init.add_argument("--dir", type=Path, default=None, help="PKI directory")
    init.set_defaults(func=_init)

    issue = pki_sub.add_parser(
        "issue",
        epilog="example: agentkeys pki issue worker --dir pki --host 127.0.0.1",
        help="issue a role certificate from the CA",
    )
    issue.add_argument("role", choices=[r.value for r in Role], help="the holder's role")
    issue.add_argument("--dir", type=Path, default=None, help="PKI directory")
    issue.add_argument("--name", default=None, help="file name stem (default: the role)")
    issue.add_argument(
        "--host",
        action="append",
        default=None,
        help="DNS name or IP for a server certificate (repeatable; default localhost, 127.0.0.1)",
    )
    issue.add_argument(
        "--replace", action="store_true", help="replace an existing certificate of that name"
    )
    issue.set_defaults(func=_issue)


def _init(args: argparse.Namespace) -> int:
    directory: Path = args.dir or default_pki_dir()
    try:
        cert, key = init_ca(directory)
    except AgentkeysError as exc:
        print(f"agentkeys pki init: {exc.reason}", file=sys.stderr)
        return 1
    print(f"CA certificate: {cert}")
    print(f"CA key:         {key}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    directory: Path = args.dir or default_pki_dir()
    hosts = tuple(args.host) if args.host else ("localhost", "127.0.0.1")
    try:
        issued = issue_certificate(
            directory, parse_role(args.role), name=args.name, hosts=hosts, replace=args.replace
        )
    except AgentkeysError as exc:
        print(f"agentkeys pki issue: {exc.reason}", file=sys.stderr)
        return 1
    print(f"{issued.role.value} certificate: {issued.cert_path}")
    print(f"{issued.role.value} key:         {issued.key_path}")
    return 0
