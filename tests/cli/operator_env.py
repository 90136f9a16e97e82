"""A registered operator on a real anvil, with the local state the CLI reads (tests only).

What ``agentkeys init --dev-authenticator`` leaves behind, built directly: a software K10 key
file, a development passkey key file, ``operator.json``, ``chain.toml`` + deployment record,
and the wallet key in a 0600 file. Registration goes through the real contracts.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account.signers.local import LocalAccount

from agentkeys.chain import ChainClient, PasskeyAuthenticator, account_from_key, deploy_all
from agentkeys.chain import challenge as ch
from agentkeys.cli import agent, device, scope, whoami
from agentkeys.cli._operator_session import DeviceK10Signer
from agentkeys.cli._operator_state import OperatorState, PasskeyRecord
from agentkeys.devstack import Anvil, start_anvil
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet, device_key_hash_from_point
from attest.device_key import SoftwareDeviceKey

RP_ID = "localhost"
ORIGIN = "http://localhost"


@dataclass
class OperatorEnv:
    anvil: Anvil
    client: ChainClient
    home: Path
    wallet: LocalAccount
    wallet_key_file: Path
    state: OperatorState
    soft_passkey: SoftAuthenticator | None = None

    @property
    def wallet_args(self) -> list[str]:
        return ["--home", str(self.home), "--wallet-key-file", str(self.wallet_key_file)]


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the commands under test (the lead wires them into agentkeys.cli)."""
    parser = argparse.ArgumentParser(prog="agentkeys")
    sub = parser.add_subparsers(dest="command")
    for register in (agent.register, scope.register, device.register, whoami.register):
        register(sub)
    return parser


def run_cli(argv: Sequence[str], **extra: object) -> int:
    """Parse and run one command (blocking: call it through trio.to_thread)."""
    args = build_parser().parse_args(list(argv))
    for name, value in extra.items():
        setattr(args, name, value)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


async def cli(argv: Sequence[str], **extra: object) -> int:
    return await trio.to_thread.run_sync(lambda: run_cli(argv, **extra))


async def register_operator(
    client: ChainClient,
    anvil: Anvil,
    home: Path,
    *,
    passkey: PasskeyAuthenticator,
    passkey_record: PasskeyRecord,
    account_index: int = 1,
) -> OperatorEnv:
    """Register a first master for dev account ``account_index`` and write the local state."""
    await trio.Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    wallet = account_from_key(anvil.accounts[account_index].private_key)
    k10_file = home / "device" / "k10.pem"
    k10 = DeviceK10Signer(SoftwareDeviceKey.open(k10_file))
    device_entry = ch.NewMaster(
        k10_point=k10.public_point,
        k11_credential_id_hash=hashlib.sha256(passkey_record.credential_id).digest(),
        k11_point=passkey_record.public_point,
        rp_id_hash=hashlib.sha256(passkey_record.rp_id.encode()).digest(),
        roles=7,
    )
    mutation = await client.prepare_register_first_master(
        wallet.address, device_entry, k10, passkey
    )
    await client.submit(mutation, wallet)
    state = OperatorState(
        wallet=wallet.address.lower(),
        operator_omni=actor_omni_for_wallet(wallet.address),
        device_key_hash=device_key_hash_from_point(k10.public_point),
        passkey=passkey_record,
        k10_backend="software",
        k10_key_file=k10_file,
    )
    state.write(home)
    wallet_key_file = home / "wallet.key"
    write_private(wallet_key_file, wallet.key.hex().encode() + b"\n")
    return OperatorEnv(anvil, client, home, wallet, wallet_key_file, state)


def dev_passkey(home: Path) -> tuple[SoftAuthenticator, PasskeyRecord]:
    """A development passkey whose key is kept in ``home/passkey-dev.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = home / "passkey-dev.pem"
    write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    soft = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, private_key=key, counting=False)
    record = PasskeyRecord(
        credential_id=soft.credential_id,
        public_point=soft.public_point,
        rp_id=RP_ID,
        origin=ORIGIN,
        dev_key_file=key_file,
    )
    return soft, record


def write_chain_config(
    home: Path, anvil: Anvil, client: ChainClient, deployment_path: Path
) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "chain.toml").write_text(
        "[chain]\n"
        'profile = "anvil"\n'
        f'rpc_url = "{anvil.rpc_url}"\n'
        f"chain_id = {anvil.chain_id}\n"
        f'deployment = "{deployment_path}"\n',
        encoding="utf-8",
    )
    (home / "chain.toml").chmod(0o600)


@asynccontextmanager
async def deployed_chain(tmp_path: Path) -> AsyncIterator[tuple[Anvil, ChainClient, Path]]:
    """anvil with the contracts deployed and the deployment record written."""
    async with start_anvil() as anvil, httpx.AsyncClient(timeout=10) as http:
        client = ChainClient(http, anvil.rpc_url)
        accounts = [account_from_key(a.private_key) for a in anvil.accounts]
        record = tmp_path / "deployment.json"
        await deploy_all(
            client,
            accounts[0],
            governance=[a.address for a in accounts[6:9]],
            threshold=2,
            record_path=record,
        )
        yield anvil, client, record


@asynccontextmanager
async def dev_operator(tmp_path: Path) -> AsyncIterator[OperatorEnv]:
    """A deployed chain and an operator registered with a development passkey."""
    async with deployed_chain(tmp_path) as (anvil, client, record):
        home = tmp_path / "home"
        write_chain_config(home, anvil, client, record)
        soft, passkey_record = dev_passkey(home)
        env = await register_operator(
            client, anvil, home, passkey=soft, passkey_record=passkey_record
        )
        env.soft_passkey = soft
        yield env
