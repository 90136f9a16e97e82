"""The ``agentkeys`` command line.

Each command group lives in its own module exposing
``register(subparsers) -> None``; the module sets ``func`` on its parsers, a
callable taking the parsed namespace and returning the exit code.

Exit codes are documented in docs/cli.md (0 success, 2 usage, 3-6 the
operator's state, passkey, chain or a refused request, 130 interrupted).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from agentkeys import __version__
from agentkeys.cli import agent as agent_cli
from agentkeys.cli import attest as attest_cli
from agentkeys.cli import audit as audit_cli
from agentkeys.cli import daemon as daemon_cli
from agentkeys.cli import dev
from agentkeys.cli import device as device_cli
from agentkeys.cli import init as init_cli
from agentkeys.cli import pki as pki_cli
from agentkeys.cli import scope as scope_cli
from agentkeys.cli import vault as vault_cli
from agentkeys.cli import wallet as wallet_cli
from agentkeys.cli import whoami as whoami_cli

_GROUPS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    agent_cli.register,
    attest_cli.register,
    audit_cli.register,
    daemon_cli.register,
    dev.register,
    device_cli.register,
    init_cli.register,
    pki_cli.register,
    scope_cli.register,
    vault_cli.register,
    wallet_cli.register,
    whoami_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentkeys",
        description="Let AI agents use API credentials without holding them.",
    )
    parser.add_argument("--version", action="version", version=f"agentkeys {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
