"""The credential source (broker cap mint + worker fetch): refusals, transport failures,
the legacy identity in fetch bodies, and v1 data served through the daemon.

There is no other source: the interim local-file source is gone and stays gone.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import agentkeys.daemon.credentials as credentials_module
from agentkeys._files import write_private
from agentkeys.config import ConfigError, load_config
from agentkeys.daemon import DaemonConfig
from agentkeys.daemon.credentials import BrokerWorkerSource
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable
from agentkeys.errors import InvalidIdentifier
from attest.device_key import SoftwareDeviceKey
from tests.daemon.conftest import ACTOR, OPERATOR, Broker


async def test_broker_refusal_is_a_refusal(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """The real broker refuses a mint without a valid J1 session: the daemon says refused,
    and logs the broker's code and reason (never the session)."""
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
    logged = [r.getMessage() for r in caplog.records if r.name == "agentkeys.daemon"]
    assert len(logged) == 1
    assert logged[0].startswith("the broker refused: HTTP 401 ")
    assert "not-a-session" not in logged[0]


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


def test_no_local_file_source_exists(tmp_path: Path) -> None:
    """A config asking for credentials from a local file is refused at load."""
    assert not hasattr(credentials_module, "FileCredentialSource")
    path = tmp_path / "daemon.toml"
    write_private(path, '[credentials]\nsource = "file"\n')
    with pytest.raises(ConfigError):
        load_config(DaemonConfig, path=path, environ={})
    write_private(path, '[credentials]\nfile = "/tmp/credentials.toml"\n')
    with pytest.raises(ConfigError):
        load_config(DaemonConfig, path=path, environ={})


def test_legacy_identity_omni_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    write_private(path, f'[identity]\nlegacy_identity_omni = "0x{"AB" * 32}"\n')
    config = load_config(DaemonConfig, path=path, environ={})
    assert config.identity.legacy_identity_omni == "0x" + "AB" * 32
    for bad in ("ab" * 31, "zz" * 32, ""):
        write_private(path, f'[identity]\nlegacy_identity_omni = "{bad}"\n')
        with pytest.raises(ConfigError) as info:
            load_config(DaemonConfig, path=path, environ={})
        assert "legacy_identity_omni" in info.value.reason
    key = SoftwareDeviceKey.open(tmp_path / "dev" / "k10.pem")
    with pytest.raises(InvalidIdentifier):
        BrokerWorkerSource(
            broker=httpx.AsyncClient(), worker=httpx.AsyncClient(), device_key=key,
            session=b"s", operator_omni=OPERATOR, actor_omni=ACTOR,
            legacy_identity_omni="not-hex",
        )  # fmt: skip
