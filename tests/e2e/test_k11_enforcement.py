"""K11 enforcement end to end (SPEC.md section 6): a scope mutation carrying only a valid K10
signature is rejected on chain, one whose passkey is not the registered one is rejected on
chain through the CLI (exit 4, one line), and K10 + the enrolled passkey succeeds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.chain import ContractReverted, MasterAuthority
from agentkeys.cli._errors import EXIT_OK, EXIT_PASSKEY
from agentkeys.cli._operator_session import DeviceK10Signer
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import agent_omni
from attest.device_key import SoftwareDeviceKey
from tests.cli.operator_env import ORIGIN, RP_ID, cli, dev_operator, write_private

K11_ARG = 5  # position of the K11 assertion in set_scope_with_webauthn


async def test_k10_only_is_rejected_and_k10_plus_k11_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        args = [*op.wallet_args, "--dev-authenticator"]
        assert await cli(["agent", "create", "bot", *args]) == EXIT_OK
        agent = agent_omni(op.state.operator_omni, "bot")
        capsys.readouterr()

        # K10 only: the device's genuine K10 signature, no passkey assertion
        assert op.soft_passkey is not None
        assert op.state.k10_key_file is not None
        k10 = SoftwareDeviceKey.open(op.state.k10_key_file, create=False)
        authority = MasterAuthority(
            bytes.fromhex(op.state.device_key_hash), DeviceK10Signer(k10), op.soft_passkey
        )
        mutation = await op.client.prepare_set_scope(
            op.state.operator_omni, agent, ["openai"], False, authority
        )
        k10_only = replace(
            mutation, args=tuple(b"" if i == K11_ARG else a for i, a in enumerate(mutation.args))
        )
        with pytest.raises(ContractReverted) as info:
            await op.client.submit(k10_only, op.wallet)
        assert info.value.revert_error == "K11AssertionMalformed"
        assert await op.client.get_scope(op.state.operator_omni, agent) is None

        # through the CLI with another passkey than the enrolled one: the chain refuses it
        state_file = op.home / "operator.json"
        enrolled = state_file.read_text()
        other_key = ec.generate_private_key(ec.SECP256R1())
        other_file = op.home / "other-passkey.pem"
        write_private(
            other_file,
            other_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        other = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, private_key=other_key)
        doc = json.loads(enrolled)
        doc["passkey"]["public_point"] = other.public_point.hex()
        doc["passkey"]["dev_key_file"] = str(other_file)
        state_file.write_text(json.dumps(doc))
        nonce = await op.client.operator_nonce(op.state.operator_omni)
        assert await cli(["scope", "add", "bot", "openai", *args]) == EXIT_PASSKEY
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "K11AssertionInvalid" in err[0]
        assert "passkey" in err[0]
        assert await op.client.get_scope(op.state.operator_omni, agent) is None
        assert await op.client.operator_nonce(op.state.operator_omni) == nonce

        # K10 + the enrolled passkey: accepted
        state_file.write_text(enrolled)
        assert await cli(["scope", "add", "bot", "openai", *args, "--json"]) == EXIT_OK
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["services"] == [
            "openai"
        ]
        assert await op.client.is_service_in_scope(op.state.operator_omni, agent, "openai")
