"""``agentkeys attest`` end to end: software key, swtpm key, bundles, pins."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.cli.attest import register
from agentkeys.devstack import Swtpm
from attest import PinKind
from attest.pin import load_pins


def run_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentkeys")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["attest", *argv])
    code: int = args.func(args)
    return code


def test_software_show_bundle_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ["--backend", "software", "--key-file", str(tmp_path / "k" / "k10.pem")]
    assert run_cli(["show", *key]) == 1  # no key yet, and show does not create one
    assert "no device key" in capsys.readouterr().err
    assert run_cli(["show", *key, "--create", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["backend"] == "software"
    assert len(shown["device_key_hash"]) == 64

    nonce = os.urandom(32).hex()
    out = tmp_path / "bundle.json"
    assert run_cli(["bundle", *key, "--nonce", nonce, "--out", str(out)]) == 0
    assert run_cli(["verify", str(out), "--nonce", nonce, "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["device_key_hash"] == shown["device_key_hash"]
    assert verified["tpm_resident"] is False
    assert run_cli(["verify", str(out), "--nonce", os.urandom(32).hex()]) == 1
    assert "another challenge" in capsys.readouterr().err
    assert run_cli(["verify", str(out), "--require-tpm"]) == 1
    assert run_cli(["bundle", *key, "--nonce", "abc"]) == 1


def test_enroll_software_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = tmp_path / "caller.pub.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    pins = tmp_path / "policy" / "pins.json"
    assert run_cli(["enroll-pin", "ci-runner", "--pins", str(pins), "--public-key", str(pem)]) == 0
    assert run_cli(["enroll-pin", "ci-runner", "--pins", str(pins), "--public-key", str(pem)]) == 1
    assert "exists" in capsys.readouterr().err
    assert load_pins(pins)["ci-runner"].kind is PinKind.P256_KEY


async def test_tpm_show_bundle_and_pin(swtpm: Swtpm, tmp_path: Path) -> None:
    tpm = ["--backend", "tpm", "--tcti", swtpm.tcti]
    out = tmp_path / "bundle.json"
    nonce = os.urandom(32).hex()

    def steps() -> None:
        assert run_cli(["show", *tpm, "--create"]) == 0
        assert run_cli(["bundle", *tpm, "--nonce", nonce, "--out", str(out)]) == 0
        assert run_cli(["verify", str(out), "--nonce", nonce, "--require-tpm"]) == 0
        pins = tmp_path / "pins" / "pins.json"
        assert run_cli(
            ["enroll-pin", "tee", "--pins", str(pins), "--tpm", "--tcti", swtpm.tcti,
             "--pcrs", "16"]
        ) == 0  # fmt: skip
        assert load_pins(pins)["tee"].pcrs == (16,)

    await trio.to_thread.run_sync(steps)
    assert json.loads(out.read_text())["backend"] == "tpm"
