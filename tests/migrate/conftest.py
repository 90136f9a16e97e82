"""Fixtures of the eager migration tool: the worker stack with legacy data written before
the transition, and a runner for the real ``agentkeys-migrate-s3-prefix`` process."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.service.conftest import Pki
from tests.signer.conftest import Chain
from tests.worker.conftest import Stack, open_stack, write_legacy
from tests.worker.conftest import chain as worker_chain
from tests.worker.conftest import pki as worker_pki

REPO = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = (worker_chain, worker_pki)  # the worker fixtures, registered under these names
LEGACY = {f"svc-{i:02d}": f"secret-{i:02d}-".encode() * 3 for i in range(8)}


@pytest.fixture
async def legacy_stack(
    nursery: trio.Nursery, worker_pki: Pki, worker_chain: Chain, tmp_path: Path
) -> AsyncIterator[Stack]:
    hook = write_legacy(worker_pki, LEGACY)
    async with open_stack(
        nursery, worker_pki, worker_chain, tmp_path, pre_transition=hook
    ) as stack:
        yield stack


@dataclass
class Run:
    returncode: int
    reports: list[dict[str, object]]
    stderr: str


def tool_command(stack: Stack, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "agentkeys.migrate", "--config", str(stack.config_path),
        "--operator-omni", stack.operator.omni, "--identity-email", stack.operator.email,
        *flags,
    ]  # fmt: skip


async def run_tool(stack: Stack, *flags: str) -> Run:
    done = await trio.run_process(
        tool_command(stack, *flags), capture_stdout=True, capture_stderr=True, check=False,
        cwd=REPO,
    )  # fmt: skip
    reports = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    return Run(done.returncode, reports, done.stderr.decode())
