"""Credential sources: the interim file source and the broker/worker client's refusals."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from agentkeys.daemon.credentials import BrokerWorkerSource, FileCredentialSource
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable
from attest.device_key import SoftwareDeviceKey
from tests.daemon.conftest import ACTOR, OPERATOR, Broker, write_private


async def test_file_source(tmp_path: Path) -> None:
    path = tmp_path / "c" / "credentials.toml"
    write_private(path, '[credentials]\nopenai = "sk-abc"\n')
    source = FileCredentialSource(path, lifetime=60, clock=lambda: 100.0)
    credential = await source.fetch("openai")
    assert (credential.secret, credential.expires_at) == (b"sk-abc", 160.0)
    with pytest.raises(CredentialRefused):
        await source.fetch("github")
    os.chmod(path, 0o640)
    with pytest.raises(CredentialUnavailable) as info:
        await source.fetch("openai")
    assert "sk-abc" not in info.value.reason


async def test_broker_refusal_is_a_refusal(tmp_path: Path, broker: Broker) -> None:
    """The real broker refuses a mint without a valid J1 session: the daemon says refused."""
    key = SoftwareDeviceKey.open(tmp_path / "dev" / "k10.pem")
    async with (
        httpx.AsyncClient(base_url=broker.url, trust_env=False) as http,
        httpx.AsyncClient(base_url="http://127.0.0.1:9", trust_env=False) as worker,
    ):
        source = BrokerWorkerSource(
            broker=http,
            worker=worker,
            device_key=key,
            session=b"not-a-session",
            operator_omni=OPERATOR,
            actor_omni=ACTOR,
        )
        with pytest.raises(CredentialRefused) as info:
            await source.fetch("openai")
    assert "not-a-session" not in info.value.reason


async def test_unreachable_broker_is_unavailable(tmp_path: Path) -> None:
    key = SoftwareDeviceKey.open(tmp_path / "dev" / "k10.pem")
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", trust_env=False) as http:
        source = BrokerWorkerSource(
            broker=http,
            worker=http,
            device_key=key,
            session=b"s",
            operator_omni=OPERATOR,
            actor_omni=ACTOR,
        )
        with pytest.raises(CredentialUnavailable) as info:
            await source.fetch("openai")
    assert not isinstance(info.value, CredentialRefused)
