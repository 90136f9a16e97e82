"""Deployment files: the systemd unit verifies; the k8s sidecar's config and policy load."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agentkeys.config import load_config
from agentkeys.daemon.config import DaemonConfig
from agentkeys.daemon.policy import parse_policy

DEPLOY = Path(__file__).parents[2] / "deploy"


def _block(manifest: str, key: str) -> str:
    """The literal block scalar ``key: |`` of the manifest (4-space indented in the file)."""
    match = re.search(rf"^  {re.escape(key)}: \|\n((?:    .*\n|\n)+)", manifest, re.MULTILINE)
    assert match is not None, key
    return "".join(line[4:] + "\n" for line in match.group(1).splitlines())


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = DEPLOY / "systemd" / "agentkeys-daemon.service"
    text = unit.read_text()
    for option in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute=yes",
    ):
        assert option in text
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "agentkeys-daemon.service" not in result.stderr, result.stderr


def test_k8s_sidecar_config_and_policy_load(tmp_path: Path) -> None:
    manifest = (DEPLOY / "k8s" / "agent-with-agentkeys-sidecar.yaml").read_text()
    policy = parse_policy(_block(manifest, "policy.toml").encode())
    assert policy.callers[0].pod_wide
    config_path = tmp_path / "daemon.toml"
    config_path.write_text(_block(manifest, "daemon.toml"))
    os.chmod(config_path, 0o600)
    config = load_config(DaemonConfig, path=config_path, environ={})
    assert (config.listen.tcp_host, config.listen.tcp_port) == ("127.0.0.1", 9090)
    assert config.listen.pod_wide
    assert 'OPENAI_BASE_URL: "http://127.0.0.1:9090/openai/v1"' in manifest
