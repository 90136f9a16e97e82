"""The ``agentkeys`` command line.

Each command group lives in its own module exposing
``register(subparsers) -> None``; the module sets ``func`` on its parsers, a
callable taking the parsed namespace and returning the exit code.

Start-up is lazy: :data:`COMMANDS` names each top-level command's module and help line,
so ``agentkeys --version`` / ``--help`` import no command module (nor the chain client,
eth_account or boto3 behind them), and a command imports only its own group.
tests/cli/test_startup.py checks the table against the modules.

Exit codes are documented in docs/cli.md (0 success, 2 usage, 3-6 the
operator's state, passkey, chain or a refused request, 130 interrupted).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from agentkeys import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

EXIT_USAGE = 2  # agentkeys.cli._errors.EXIT_USAGE (not imported: it pulls in the chain)

#: top-level command → (module under agentkeys.cli, the help line its parser shows)
COMMANDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "agent": ("agent", "create, list or revoke agents (changes ask for your passkey)"),
        "attest": ("attest", "device key, attestation bundles, E3 caller pins"),
        "audit": ("audit", "inspect the sidecar daemon's audit log"),
        "completion": ("completion", "print a shell completion script (bash, zsh, tcsh)"),
        "contracts": ("contracts", "deploy the contract set"),
        "daemon": (
            "daemon",
            "run the sidecar daemon (attested local proxy that injects credentials)",
        ),
        "dev": ("dev", "run the embedded local stack"),
        "device": ("device", "list or revoke this operator's devices"),
        "init": (
            "init",
            "sign in (email, passkey, wallet) and register this device as your master",
        ),
        "pki": ("pki", "development CA and mutual-TLS role certificates"),
        "scope": ("scope", "grant or remove an agent's services"),
        "session": ("session", "show, renew or revoke your broker session"),
        "sidecar": (
            "sidecar",
            "set up an agent's sidecar daemon under its own user (run as root)",
        ),
        "store": ("vault", "store a credential"),
        "read": ("vault", "read a credential"),
        "list": ("vault", "list stored services"),
        "teardown": ("vault", "delete one credential (or every one with --all)"),
        "wallet": ("wallet", "create an operator wallet"),
        "whoami": ("whoami", "the operator, wallet and device this machine uses"),
    }
)

_Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _register_of(module: str) -> _Register:
    loaded = importlib.import_module(f"agentkeys.cli.{module}")
    register: _Register = loaded.register
    return register


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The parser: every group registered (``"*"``, for completion and tests), only the
    group of ``command`` (the others listed by name and help), or none (``None``)."""
    parser = argparse.ArgumentParser(
        prog="agentkeys",
        description="Let AI agents use API credentials without holding them.",
        epilog="example: agentkeys store openai --stdin; then: agentkeys list",
    )
    parser.add_argument("--version", action="version", version=f"agentkeys {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = set(dict.fromkeys(m for m, _ in COMMANDS.values())) if command == "*" else set()
    if command is not None and command in COMMANDS:
        wanted.add(COMMANDS[command][0])
    registered: set[str] = set()
    for name, (module, help_line) in COMMANDS.items():
        if module in wanted:
            if module not in registered:
                _register_of(module)(sub)
                registered.add(module)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The top-level command named in ``argv`` (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(words))
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2), as a return
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
