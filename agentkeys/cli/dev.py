"""``agentkeys dev up|down|status|fund|demo``: the embedded local stack (SPEC.md section 10).

``dev up`` runs every component in one process until Ctrl-C (or ``dev down``), under one state
directory (``--state-dir``, default ``./.agentkeys-state``); see agentkeys.devstack.up.
``dev fund`` gives a wallet test ether on the stack's anvil (``anvil_setBalance``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx
import trio
from eth_utils.address import is_address, to_checksum_address

from agentkeys.chain._rpc import JsonRpc
from agentkeys.cli._errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_STATE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
)
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.devstack.up import (
    DEFAULT_STATE_DIR,
    DevUpOptions,
    StackStatus,
    read_status,
    running_pid,
    serve_until_signalled,
    stop_dev_stack,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dev up``, ``dev down``, ``dev status`` and ``dev demo``."""
    dev = sub.add_parser("dev", allow_abbrev=False, help="run the embedded local stack")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)

    up = dev_sub.add_parser(
        "up",
        epilog="example: agentkeys dev up --state-dir .agentkeys-state",
        allow_abbrev=False,
        help="start anvil, contracts, SeaweedFS, swtpm, PKI, signer, … until Ctrl-C",
    )
    up.add_argument("--no-swtpm", action="store_true", help="do not start swtpm")
    up.add_argument(
        "--hardfork", metavar="NAME", help="anvil hardfork (prague: no P-256 precompile)"
    )
    up.set_defaults(func=_up)
    down = dev_sub.add_parser(
        "down",
        epilog="example: agentkeys dev down --state-dir .agentkeys-state",
        allow_abbrev=False,
        help="stop the running `dev up`",
    )
    down.set_defaults(func=_down)
    status = dev_sub.add_parser(
        "status",
        epilog="example: agentkeys dev status --json",
        allow_abbrev=False,
        help="what the running `dev up` serves",
    )
    status.set_defaults(func=_status)
    fund = dev_sub.add_parser(
        "fund",
        epilog="example: agentkeys dev fund 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --eth 10",
        allow_abbrev=False,
        help="give a wallet test ether on the stack's anvil",
    )
    fund.add_argument("address", help="the wallet's 0x address")
    fund.add_argument(
        "--eth", type=int, default=10, metavar="N", help="its new balance in ether (default 10)"
    )
    fund.add_argument(
        "--rpc-url", metavar="URL", help="anvil's RPC URL (default: the running `dev up`'s)"
    )
    fund.set_defaults(func=_fund)
    for parser in (up, down, status, fund):
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            metavar="DIR",
            help=f"the stack's state directory (default ./{DEFAULT_STATE_DIR})",
        )
        add_output_options(parser)
    demo = dev_sub.add_parser(
        "demo",
        epilog="example: agentkeys dev demo",
        allow_abbrev=False,
        help="start a fresh stack and run the scripted scenario (docs/demo.md)",
    )
    demo.set_defaults(func=_demo)


def _status_lines(data: dict[str, object]) -> list[str]:
    lines = []
    components = data.get("components")
    if isinstance(components, dict):
        for name, info in components.items():
            if not isinstance(info, dict):
                continue
            details = "  ".join(f"{k}={v}" for k, v in info.items() if k != "state")
            lines.append(f"  {name:<10} {info.get('state', '?'):<14} {details}".rstrip())
    return lines


def _up(args: argparse.Namespace) -> int:
    lifetime = os.environ.get("AGENTKEYS_DEV_DEVICE_LIFETIME", "900")
    if not lifetime.isdigit():
        print("agentkeys: AGENTKEYS_DEV_DEVICE_LIFETIME must be seconds", file=sys.stderr)
        return EXIT_USAGE
    options = DevUpOptions(
        state_dir=args.state_dir,
        swtpm=not args.no_swtpm,
        hardfork=args.hardfork,
        device_lifetime=int(lifetime),
    )

    def started(status: StackStatus) -> None:
        data = status.to_json()
        if args.json:
            extra = {"source": status.source_line, "agent_source": status.agent_source_line}
            print(json.dumps({**data, **extra}, sort_keys=True))
        else:
            print(f"agentkeys dev stack up (pid {status.pid}), state in {status.state_dir}")
            for line in _status_lines(data):
                print(line)
            print("Point your shell at it with:")
            print(f"  {status.source_line}")
            if status.agent_source_line is not None:
                print("and the agent's shell at the daemon with:")
                print(f"  {status.agent_source_line}")
            print("Stop with Ctrl-C, or `agentkeys dev down` from another shell.")
        sys.stdout.flush()

    async def command() -> None:
        await serve_until_signalled(options, started)
        if not args.json:
            print("agentkeys dev stack stopped", flush=True)

    return run(args, command)


def _down(args: argparse.Namespace) -> int:
    async def command() -> None:
        pid = await stop_dev_stack(args.state_dir)
        if args.json:
            print(json.dumps({"stopped": pid}))
        elif pid is None:
            print(f"no dev stack runs on {args.state_dir}")
        else:
            print(f"dev stack (pid {pid}) stopped")

    return run(args, command)


def _status(args: argparse.Namespace) -> int:
    pid = running_pid(args.state_dir)
    data = read_status(args.state_dir) if pid is not None else None
    if pid is None or data is None:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print(f"no dev stack runs on {args.state_dir}; start one with `agentkeys dev up`")
        return EXIT_NO_STATE
    if args.json:
        print(json.dumps({"running": True, **data}, sort_keys=True))
    else:
        print(f"dev stack running (pid {pid}), state in {data.get('state_dir')}")
        for line in _status_lines(data):
            print(line)
        print(f"  source {Path(str(data.get('state_dir'))) / 'env.sh'}")
    return EXIT_OK


class NoDevStack(CliError):
    """``dev fund`` found no running stack to fund on (and no ``--rpc-url``)."""

    error = "no_dev_stack"
    exit_code = EXIT_NO_STATE


class BadAddress(CliError):
    """``dev fund`` was given something that is not a 0x address."""

    error = "address_invalid"
    exit_code = EXIT_USAGE


def _fund(args: argparse.Namespace) -> int:
    async def command() -> None:
        if not is_address(args.address) or args.eth < 0:
            raise BadAddress(f"{args.address!r} is not a 0x address (or --eth is negative)")
        address = to_checksum_address(args.address)
        url: str | None = args.rpc_url
        if url is None:
            data = read_status(args.state_dir) if running_pid(args.state_dir) else None
            env = data.get("env") if data is not None else None
            url = env.get("AGENTKEYS_CHAIN_RPC_URL") if isinstance(env, dict) else None
        if not url:
            raise NoDevStack(
                f"no dev stack runs on {args.state_dir}; start one with `agentkeys dev up` "
                "or pass --rpc-url"
            )
        wei = args.eth * 10**18
        async with httpx.AsyncClient(timeout=15) as http:
            await JsonRpc(http, url).call("anvil_setBalance", address, hex(wei))
        emit(args, {"address": address, "balance_wei": wei}, [f"{address} holds {args.eth} ETH"])

    return run(args, command)


def _demo(args: argparse.Namespace) -> int:
    # imported here: agentkeys.devstack.demo builds on agentkeys.cli's own modules
    from agentkeys.devstack.demo import run_demo

    async def command() -> bool:
        return await run_demo(sys.stdout)

    try:
        ok = trio.run(command)
    except KeyboardInterrupt:
        print("agentkeys: demo interrupted; everything it started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_FAILED
