"""docs/cli.md's exit-code table, one documented error case per row (or more), run through
``agentkeys.cli.main`` as a user would: the code, and exactly one stderr line saying what to do.

Real anvil and contracts (:func:`tests.cli.operator_env.dev_operator`); the cases that need a
broker or worker are pinned in tests/e2e/test_init.py.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

import pytest
import trio

from agentkeys.cli import main
from agentkeys.cli._errors import (
    EXIT_CHAIN_UNREACHABLE,
    EXIT_FAILED,
    EXIT_NO_STATE,
    EXIT_OK,
    EXIT_PASSKEY,
    EXIT_REJECTED,
    EXIT_USAGE,
)
from agentkeys.cli._output import run
from agentkeys.devstack import pick_port
from attest.errors import DeviceKeyError
from tests.cli.operator_env import dev_operator, write_private


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, list(argv))
    return code, capsys.readouterr().err


def _line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_every_documented_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = str(tmp_path / "empty")
    other_key = tmp_path / "other.key"
    write_private(other_key, secrets.token_bytes(32).hex().encode())
    # 3: no usable local state
    for argv in (["scope", "show", "bot", "--home", empty],
                 ["list", "--credential-backend", "sidecar", "--home", empty],
                 ["session", "status", "--home", empty],
                 ["dev", "status", "--state-dir", empty]):  # fmt: skip
        code, err = await _run(capsys, *argv)
        assert code == EXIT_NO_STATE, (argv, err)
    # 2: usage errors, checked before anything is read or sent
    for argv, said in (
        (["list", "--no-such-option"], "unrecognized arguments"),
        (["teardown", "--home", empty], "--all"),
        (["scope", "add", "bot", "not a service!", "--home", empty], "service"),
        (["agent", "create", "Bad_Label", "--home", empty], "label"),
        (["scope", "remove", "bot", "--home", empty], "--all"),
        (["device", "register", "--upgrade-from-v1", "--home", empty], "--legacy-email"),
    ):
        code, err = await _run(capsys, *argv)
        assert code == EXIT_USAGE, (argv, err)
        assert said in err.strip().splitlines()[-1], (argv, err)

    async with dev_operator(tmp_path) as op:
        home = ["--home", str(op.home)]
        dev = [*op.wallet_args, "--dev-authenticator"]
        code, err = await _run(capsys, "agent", "create", "bot", *dev)
        assert code == EXIT_OK, err
        # 2: a renewal of a home that records no email, without --email
        code, err = await _run(capsys, "session", "renew", *home, "--dev-authenticator")
        assert code == EXIT_USAGE, err
        assert "--email" in _line(err)
        # 3: no broker session in the home
        code, err = await _run(capsys, "session", "status", *home)
        assert code == EXIT_NO_STATE, err
        assert "session renew" in _line(err)
        # 1: the operation failed (another wallet than the master's)
        wrong = [*home, "--wallet-key-file", str(other_key), "--dev-authenticator"]
        code, err = await _run(capsys, "scope", "add", "bot", "openai", *wrong)
        assert code == EXIT_FAILED
        assert "master wallet" in _line(err)
        # 4: the passkey page expired
        code, err = await _run(capsys, "scope", "add", "bot", "openai", *op.wallet_args,
                               "--no-browser", "--passkey-timeout", "0.2")  # fmt: skip
        assert code == EXIT_PASSKEY, err
        # 6: rejected by the chain's state
        code, err = await _run(capsys, "scope", "add", "bot", "openai", *dev)
        assert code == EXIT_OK, err
        for argv, said in (
            (["scope", "add", "bot", "openai", *dev], "already in"),
            (["scope", "add", "ghost", "openai", *dev], "unknown agent"),
            (["scope", "remove", "bot", "github", *dev], "not in"),
            (["device", "revoke", secrets.token_hex(32), *dev], "device"),
            (["init", "--email", "op@example.com", *home, "--dev-authenticator"], "already"),
        ):
            code, err = await _run(capsys, *argv)
            assert code == EXIT_REJECTED, (argv, err)
            assert said in _line(err), (argv, err)
    # 5: the chain unreachable
    monkeypatch.setenv("AGENTKEYS_CHAIN_RPC_URL", f"http://127.0.0.1:{pick_port()}")
    code, err = await _run(capsys, "device", "list", *home)
    assert code == EXIT_CHAIN_UNREACHABLE
    assert "dev up" in _line(err)


def test_an_attest_error_ends_a_command_with_exit_3_and_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # attest has its own exception root: a device key that cannot be used still ends a
    # command as documented, raised bare or from inside a nursery
    async def unusable_key() -> None:
        raise DeviceKeyError("the K10 file is unreadable")

    async def in_a_nursery() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(unusable_key)

    for command in (unusable_key, in_a_nursery):
        assert run(argparse.Namespace(), command) == EXIT_NO_STATE
        said = _line(capsys.readouterr().err)
        assert said == "agentkeys: the device key (K10) is unusable: the K10 file is unreadable"
