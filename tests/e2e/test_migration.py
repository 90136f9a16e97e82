"""Migration from the v1 design through the CLI (SPEC.md section 9), on the real dev stack:
the legacy ``s3`` backend writes a v1 envelope → the operator upgrades (``device register
--upgrade-from-v1``) → the ``sidecar`` backend reads it (lazy copy to 0x04) → the eager tool
migrates the rest → reads now come from the v2 key.

The dev signer is started with an imported legacy master secret, as an operator moving from
the v1 design does; the test derives the legacy K4 from it to send the registration (the
signer has no endpoint that signs transactions for K4 in stage 1).
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import httpx

from agentkeys.b64url import b64url_decode
from agentkeys.chain import account_from_key
from agentkeys.cli._bootstrap import BrokerSignIn, email_sign_in, write_session
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.migrate import migrate_operator
from agentkeys.omni import actor_omni_for_wallet, identity_omni
from agentkeys.wallet import derive_k4_private_key
from attest.device_key import SoftwareDeviceKey
from tests.e2e.conftest import Cli, DevStack

EMAIL = "v1-user@example.com"


async def test_v1_write_upgrade_sidecar_read_and_eager_tool(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    status, legacy_secret = dev_stack.status, dev_stack.legacy_master_secret
    assert status.controls is not None
    controls = status.controls
    identity = identity_omni("email", EMAIL)
    k4 = account_from_key(derive_k4_private_key(legacy_secret, identity))
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    # the v1 user's sign-in: email link, passkey, SIWE signed by the signer-held K4
    async with httpx.AsyncClient(base_url=controls.broker_url, timeout=30) as broker:
        signin = BrokerSignIn(broker)
        j0 = await email_sign_in(signin, EMAIL, maildir=controls.maildir)
        passkey = SoftAuthenticator(rp_id="localhost", origin=controls.passkey_origin)

        async def create(options: Any) -> Any:
            return passkey.create(b64url_decode(options["challenge"])).to_json()

        async def get(options: Any) -> Any:
            return passkey.get(b64url_decode(options["challenge"])).to_json()

        await signin.enroll(j0, SoftwareDeviceKey.open(tmp_path / "v1-k10.pem"), create)
        answer = await signin.siwe_k4(j0, get)
    assert answer["wallet"] == k4.address.lower()
    write_session(home, answer, controls.broker_url)

    env = status.env
    _cli = cli
    base = ["--home", str(home)]

    # 1. the deprecated s3 backend (the default) writes 0x01 at bots/<wallet>/…
    code, out, err = await _cli(
        "store", "openai", "--stdin", "--legacy-email", EMAIL, "--json", *base,
        stdin=b"sk-v1-openai-key\n",
    )  # fmt: skip
    assert code == 0, err
    stored = json.loads(out)
    assert stored["key"] == f"bots/{k4.address.lower()}/credentials/openai.enc"
    assert stored["envelope_version"] == 1
    assert "deprecated" in err
    assert "--credential-backend sidecar" in err
    code, _, err = await _cli(
        "store", "github", "--stdin", "--legacy-email", EMAIL, *base, stdin=b"ghp-v1\n"
    )
    assert code == 0, err
    # the sidecar backend cannot read yet: the operator has no master device on chain
    code, _, err = await _cli("read", "openai", "--credential-backend", "sidecar", *base)
    assert code != 0
    assert len(err.strip().splitlines()) == 1

    # 2. the operator upgrades (K11 + master device on chain, legacy identity recorded)
    async with httpx.AsyncClient(timeout=10) as http:
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
               "params": [k4.address, hex(10**20)]}  # fmt: skip
        assert (await http.post(env["AGENTKEYS_CHAIN_RPC_URL"], json=rpc)).status_code == 200
    wallet_file = home / "k4.key"
    wallet_file.write_text(k4.key.hex())
    wallet_file.chmod(0o600)
    code, out, err = await _cli(
        "device", "register", "--upgrade-from-v1", "--legacy-email", EMAIL,
        "--wallet-key-file", str(wallet_file), "--dev-authenticator", *base,
    )  # fmt: skip
    assert code == 0, err
    assert "agentkeys-migrate-s3-prefix" in out
    assert identity in out
    operator = actor_omni_for_wallet(k4.address)
    state = json.loads((home / "operator.json").read_text())
    assert state["legacy_identity_omni"] == identity
    assert state["operator_omni"] == operator

    # 3. the sidecar backend reads the v1 credential; the worker copies it to 0x04
    sidecar = ["--credential-backend", "sidecar", "--json", *base]
    code, out, err = await _cli("read", "openai", "--show-secret", *sidecar)
    assert code == 0, err
    read = json.loads(out)
    assert read["secret"] == "sk-v1-openai-key"
    assert read["source"] == "v1"
    assert read["migration"]["migrated"] is True
    code, out, err = await _cli("read", "openai", "--show-secret", *sidecar)
    assert json.loads(out)["source"] == "v2"

    # 4. the eager tool migrates what is left
    reports = await migrate_operator(
        controls.worker_config, operator_omni=operator, identity=identity,
        delete_v1=False, dry_run=False, out=StringIO(), progress=None,
    )  # fmt: skip
    assert {r.service: r.action.value for r in reports}["github"] == "migrated"
    code, out, err = await _cli("read", "github", "--show-secret", *sidecar)
    assert code == 0, err
    assert json.loads(out)["source"] == "v2"
    assert json.loads(out)["secret"] == "ghp-v1"
    code, out, err = await _cli("list", *sidecar)
    assert code == 0, err
    assert {s["service"] for s in json.loads(out)["services"]} == {"openai", "github"}
