"""``agentkeys daemon`` and ``agentkeys daemon env`` as commands; K10 created at first start.

The daemon serving real credentials as its own process, and with a K10 in swtpm, runs in
test_e2e.py on the shared real stack.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest
import trio

from agentkeys._files import write_private
from agentkeys.cli import daemon as daemon_cli
from agentkeys.config import load_config
from agentkeys.daemon import DaemonAddress, DaemonConfig
from agentkeys.daemon.run import run_daemon
from tests.daemon.conftest import REAL_KEY, Broker, policy_text, write_daemon_toml


async def test_k10_is_created_at_first_start_as_a_0600_software_key(
    tmp_path: Path, broker: Broker
) -> None:
    """No TPM configured: run_daemon creates K10 as a 0600 software key before serving."""
    path = write_daemon_toml(tmp_path, broker.url)
    config = load_config(DaemonConfig, path=path, environ={})
    write_private(tmp_path / "etc" / "policy.toml", policy_text("http://127.0.0.1:9"))
    key = tmp_path / "device" / "k10.pem"
    assert not key.exists()
    async with trio.open_nursery() as nursery:
        address: DaemonAddress = await nursery.start(run_daemon, config)
        assert await trio.Path(address.socket_path).is_socket()
        nursery.cancel_scope.cancel()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700


def test_env_command_writes_placeholders_only(tmp_path: Path) -> None:
    config = write_daemon_toml(tmp_path, "http://127.0.0.1:9")
    write_private(tmp_path / "etc" / "policy.toml", policy_text("https://api.example"))
    parser = argparse.ArgumentParser()
    daemon_cli.register(parser.add_subparsers())
    args = parser.parse_args(["daemon", "--config", str(config), "--tcp-port", "9090", "env"])
    assert args.func(args) == 0
    env = tmp_path / "xdg" / "agentkeys" / "env"
    text = env.read_text()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "export OPENAI_BASE_URL=http://127.0.0.1:9090/openai/v1" in text
    assert "export OPENAI_API_KEY=agentkeys-placeholder" in text
    assert "export AGENTKEYS_MINUTELY_BASE_URL=http://127.0.0.1:9090/minutely" in text
    assert f"AGENTKEYS_PROXY_SOCKET={tmp_path}/run/agentkeys-proxy.sock" in text
    assert REAL_KEY not in text
    os.chmod(tmp_path / "etc" / "policy.toml", 0o666)  # noqa: S103
    assert args.func(args) == 1  # a policy others can write is refused


def test_the_daemon_reads_its_default_config_without_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_daemon_toml(tmp_path, "http://127.0.0.1:9")
    write_private(tmp_path / "etc" / "policy.toml", policy_text("https://api.example"))
    home = tmp_path / "home-config"
    write_private(home / "agentkeys" / "daemon.toml", config.read_text())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    parser = argparse.ArgumentParser()
    daemon_cli.register(parser.add_subparsers())
    args = parser.parse_args(["daemon", "env"])
    assert args.func(args) == 0
    # the default file's own env path (not $XDG_CONFIG_HOME/agentkeys/env) was written
    assert (tmp_path / "xdg" / "agentkeys" / "env").exists()
    assert not (home / "agentkeys" / "env").exists()
