"""``agentkeys contracts deploy``: the contract set on a real EVM chain (SPEC.md section 6).

The deployer's wallet comes from an encrypted keystore (or a 0600 key file), never argv;
it pays the gas of the four transactions (:func:`agentkeys.chain.deploy.deploy_all`). The
RPC endpoint must serve the chain id given, so a wallet is never spent on the wrong
chain, and the deployment record (the file every service's ``[chain] deployment`` names)
is written only if it does not exist yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import trio

from agentkeys.chain.client import ChainClient
from agentkeys.chain.deploy import deploy_all
from agentkeys.cli._errors import Rejected
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._secrets import add_wallet_options, load_wallet

__all__ = ["register"]

_EXAMPLE = (
    "example: agentkeys contracts deploy --rpc-url https://rpc.example --chain-id 84532 "
    "--governance 0xA… --threshold 1 --record deployment.json "
    "--wallet-keystore deployer.json --password-file pw"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``contracts deploy``."""
    contracts = sub.add_parser(
        "contracts", allow_abbrev=False, help="deploy the contract set", epilog=_EXAMPLE
    )
    contracts_sub = contracts.add_subparsers(
        dest="contracts_command", metavar="CONTRACTS_COMMAND", required=True
    )
    deploy = contracts_sub.add_parser(
        "deploy",
        allow_abbrev=False,
        help="deploy SidecarRegistry, ScopeContract and K3EpochCounter; write the record",
        epilog=_EXAMPLE,
    )
    deploy.add_argument("--rpc-url", required=True, help="the chain's JSON-RPC endpoint")
    deploy.add_argument(
        "--chain-id", type=int, required=True, help="the chain id the endpoint must serve"
    )
    deploy.add_argument(
        "--governance",
        action="append",
        required=True,
        metavar="ADDRESS",
        help="a K3 epoch governance member (repeat for each)",
    )
    deploy.add_argument(
        "--threshold", type=int, required=True, help="approvals (of the members) an epoch needs"
    )
    deploy.add_argument(
        "--record", type=Path, required=True, metavar="FILE", help="deployment record to write"
    )
    add_wallet_options(deploy)
    add_output_options(deploy)
    deploy.set_defaults(func=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    async def command() -> None:
        record: Path = args.record
        if await trio.Path(record).exists():
            raise Rejected(f"{record} exists; a deployment record is never overwritten")
        deployer = load_wallet(args, None)
        async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
            client = ChainClient(http, args.rpc_url)
            await client.check_chain_id(args.chain_id)
            deployment = await deploy_all(
                client,
                deployer,
                governance=args.governance,
                threshold=args.threshold,
                record_path=record,
            )
        addresses = deployment.addresses
        emit(
            args,
            {**deployment.to_json(), "record": str(record)},
            [
                f"SidecarRegistry {addresses.registry}",
                f"ScopeContract   {addresses.scope}",
                f"K3EpochCounter  {addresses.epoch_counter}",
                f"deployed by {deployment.deployer} on chain {deployment.chain_id}, "
                f"block {deployment.block_number}; record {record}",
            ],
        )

    return run(args, command)
