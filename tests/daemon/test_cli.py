"""``agentkeys daemon`` and ``agentkeys daemon env`` as real processes / commands."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from agentkeys.cli import daemon as daemon_cli
from agentkeys.config import load_config
from agentkeys.daemon import DaemonAddress, DaemonConfig
from agentkeys.daemon.config import DeviceSection
from agentkeys.daemon.run import run_daemon
from agentkeys.devstack import Swtpm
from attest import Backend, open_device_key
from tests.daemon.conftest import ACTOR, OPERATOR, Broker, policy_text, wait_until, write_private
from tests.daemon.upstream import REAL_KEY, Upstream

MAIN = (
    "import argparse, sys\n"
    "from agentkeys.cli import daemon\n"
    "p = argparse.ArgumentParser(); s = p.add_subparsers(); daemon.register(s)\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
)


def _config(tmp: Path, broker_url: str) -> Path:
    secrets = tmp / "secrets" / "credentials.toml"
    write_private(secrets, f'[credentials]\nopenai = "{REAL_KEY}"\n')
    path = tmp / "etc" / "daemon.toml"
    write_private(
        path,
        f"""
[listen]
socket = "{tmp}/run/agentkeys-proxy.sock"
[policy]
path = "{tmp}/etc/policy.toml"
reload_interval = 0.1
[broker]
url = "{broker_url}"
heartbeat_interval = 0.1
[credentials]
source = "file"
file = "{secrets}"
[identity]
operator_omni = "{OPERATOR}"
actor_omni = "{ACTOR}"
[device]
backend = "software"
key_path = "{tmp}/device/k10.pem"
[audit]
path = "{tmp}/state/audit.log"
[env]
path = "{tmp}/xdg/agentkeys/env"
""",
    )
    return path


async def test_daemon_process_serves_and_stops_on_sigterm(
    tmp_path: Path, upstream: Upstream, broker: Broker
) -> None:
    config = _config(tmp_path, broker.url)
    write_private(tmp_path / "etc" / "policy.toml", policy_text(upstream.url))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", MAIN, "daemon", "--config", str(config)],
        stderr=subprocess.PIPE,
    )
    sock = tmp_path / "run" / "agentkeys-proxy.sock"
    try:
        await wait_until(sock.exists)
        transport = httpx.AsyncHTTPTransport(uds=str(sock))
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            for _ in range(200):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await trio.sleep(0.05)
            response = await client.get("/openai/v1/models")
        assert response.status_code == 200
        assert upstream.requests[-1]["headers"]["authorization"] == f"Bearer {REAL_KEY}"
        # K10 was created at first start: a 0600 software key (no TPM configured here)
        key = tmp_path / "device" / "k10.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            code = await proc.wait()
        assert code == 0
        assert proc.stderr is not None
        log = (await proc.stderr.receive_some(1 << 20)).decode()
        assert "stopped" in log
        assert REAL_KEY not in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_env_command_writes_placeholders_only(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
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


async def test_k10_is_created_in_the_tpm_at_first_start(
    tmp_path: Path, upstream: Upstream, broker: Broker, swtpm: Swtpm
) -> None:
    """run_daemon with device.backend = tpm (swtpm): K10 lives in the TPM, none on disk."""
    path = _config(tmp_path, broker.url)
    write_private(tmp_path / "etc" / "policy.toml", policy_text(upstream.url))
    config = load_config(DaemonConfig, path=path, environ={})
    config = dataclasses.replace(
        config, device=DeviceSection(backend="tpm", tcti=swtpm.tcti, key_path=None)
    )
    async with trio.open_nursery() as nursery:
        address: DaemonAddress = await nursery.start(run_daemon, config)
        transport = httpx.AsyncHTTPTransport(uds=address.socket_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            for _ in range(200):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await trio.sleep(0.05)
            assert (await client.get("/openai/v1/models")).status_code == 200
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "device").exists()
    key = await open_device_key("tpm", tcti=swtpm.tcti, create=False)
    try:
        assert key.backend is Backend.TPM
    finally:
        await key.aclose()
