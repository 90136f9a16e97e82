"""End-to-end fixtures: the real dev stack in this process (``run_dev_stack``: anvil, the
contracts, SeaweedFS with IAM/STS, the signer, the SMTP sink, the broker, the worker) and the
``agentkeys`` CLI run in a worker thread with the environment ``dev up``'s env.sh sets."""

from __future__ import annotations

import io
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from agentkeys.cli import main
from agentkeys.devstack.up import DevUpOptions, StackStatus, run_dev_stack


@dataclass
class DevStack:
    status: StackStatus
    legacy_master_secret: bytes


@pytest.fixture
async def dev_stack(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DevStack]:
    """A fresh stack (no swtpm: faster; the signer seals in software) whose signer holds an
    imported legacy (v1) master secret; its env.sh variables are set in this process."""
    secret = secrets.token_bytes(32)
    options = DevUpOptions(state_dir=tmp_path / "state", swtpm=False, legacy_master_secret=secret)
    status: StackStatus = await nursery.start(run_dev_stack, options)
    for name, value in status.env.items():
        monkeypatch.setenv(name, value)
    yield DevStack(status, secret)
    nursery.cancel_scope.cancel()


class Cli:
    """``agentkeys`` in a worker thread of this process (as tests/cli does): one process
    start per test instead of one per command."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    async def __call__(self, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        self.capsys.readouterr()
        self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = await trio.to_thread.run_sync(main, list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch)
