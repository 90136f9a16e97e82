"""``agentkeys sidecar setup``: the pieces it writes, checked without a stack (the whole
command runs in tests/docs/test_quickstart.py, as the quickstart has it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agentkeys.cli import main
from agentkeys.cli._errors import UsageError
from agentkeys.cli.sidecar import (
    SidecarLayout,
    daemon_toml,
    manual_start,
    resolve_exe,
    sidecar_unit,
    starter_policy,
    tcp_port_owner,
)
from agentkeys.config import load_config
from agentkeys.daemon.config import DaemonConfig
from agentkeys.daemon.policy import parse_policy

REPO = Path(__file__).resolve().parents[2]
LAYOUT = SidecarLayout.for_agent("coder")


def test_layout_names_and_paths() -> None:
    assert (LAYOUT.daemon_user, LAYOUT.socket_group) == ("agentkeys-coder", "agentkeys-coder-sock")
    assert LAYOUT.config_path == Path("/etc/agentkeys/sidecar/coder/daemon.toml")
    assert LAYOUT.key_path == Path("/var/lib/agentkeys-sidecar/coder/k10.pem")
    assert LAYOUT.socket_path == Path("/run/agentkeys-sidecar/coder/agentkeys-proxy.sock")
    with pytest.raises(UsageError, match="shorter --daemon-user"):
        SidecarLayout.for_agent("a" * 20)
    assert SidecarLayout.for_agent("a" * 20, "ak-a").socket_group == "ak-a-sock"


def test_allow_exe_resolves_symlinks_and_records_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "opt" / "python3.11"
    real.parent.mkdir()
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to(real)
    (bin_dir / "python").symlink_to(bin_dir / "python3")
    monkeypatch.setenv("PATH", str(bin_dir))
    exe = resolve_exe("python")
    assert (exe.named, exe.path) == ("python", real)
    text = starter_policy(
        LAYOUT,
        agent_user="alice",
        agent_uid=1234,
        exes=[exe],
        services=["openai", "github"],
        upstreams={"openai": "http://127.0.0.1:9"},
    )
    assert f"# --allow-exe python: {bin_dir / 'python'} resolves to {real}" in text
    policy = parse_policy(text.encode())
    (rule,) = policy.callers
    assert (rule.uid, rule.exe, rule.services) == (1234, str(real), frozenset({"openai", "github"}))
    assert policy.services["openai"].upstream == "http://127.0.0.1:9"
    assert policy.services["openai"].allows("POST", "/v1/chat/completions")
    assert not policy.services["openai"].allows("DELETE", "/v1/files/x")
    assert policy.services["github"].upstream == "https://api.github.com"
    with pytest.raises(UsageError, match="no such executable"):
        resolve_exe("no-such-program-here")


def test_without_allow_exe_any_program_of_the_uid_only() -> None:
    text = starter_policy(
        LAYOUT, agent_user="alice", agent_uid=1234, exes=[], services=["openai"], upstreams={}
    )
    (rule,) = parse_policy(text.encode()).callers
    assert (rule.uid, rule.any_exe) == (1234, True)


def _daemon_toml(*, tcp_port: int | None = None, rpc_url: str | None = None) -> str:
    return daemon_toml(
        LAYOUT,
        operator_omni="0a" * 32,
        actor_omni="0b" * 32,
        broker_url="http://127.0.0.1:1",
        worker_url="http://127.0.0.1:2",
        rpc_url=rpc_url,
        confirmations=0,
        legacy_identity_omni=None,
        tcp_port=tcp_port,
    )


def test_daemon_config_loads_with_every_path_explicit_and_no_session(tmp_path: Path) -> None:
    text = _daemon_toml(rpc_url="http://127.0.0.1:3")
    assert "session" not in text
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    path.chmod(0o600)
    config = load_config(DaemonConfig, path=path, environ={})
    assert config.identity.actor_omni == "0b" * 32
    assert config.device.key_path == LAYOUT.key_path
    assert config.listen.socket_group == "agentkeys-coder-sock"
    assert (config.socket_path, config.env_path) == (LAYOUT.socket_path, LAYOUT.env_path)
    assert (config.policy_path, config.audit_path) == (LAYOUT.policy_path, LAYOUT.audit_path)
    assert config.chain.deployment == LAYOUT.deployment_path


@pytest.mark.parametrize("port", [None, 8790])
def test_tcp_port_turns_on_the_loopback_listener_only_when_given(
    port: int | None, tmp_path: Path
) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text(_daemon_toml(tcp_port=port))
    path.chmod(0o600)
    listen = load_config(DaemonConfig, path=path, environ={}).listen
    assert (listen.tcp_port, listen.tcp_host) == (port, "127.0.0.1")
    assert listen.socket == LAYOUT.socket_path  # the socket stays, for clients that use it


def test_a_tcp_port_of_another_sidecars_config_is_found(tmp_path: Path) -> None:
    for agent, port in (("coder", 8790), ("reviewer", 8791)):
        (tmp_path / agent).mkdir()
        (tmp_path / agent / "daemon.toml").write_text(_daemon_toml(tcp_port=port))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "daemon.toml").write_text("[listen\ntcp_port = 8792\n")
    assert tcp_port_owner(8791, "coder", root=tmp_path) == "reviewer"
    assert tcp_port_owner(8790, "coder", root=tmp_path) is None  # its own: kept on a re-run
    assert tcp_port_owner(8790, "reviewer", root=tmp_path) == "coder"
    assert tcp_port_owner(8792, "coder", root=tmp_path) is None
    assert tcp_port_owner(8793, "coder", root=tmp_path) is None


def test_the_shipped_template_unit_is_what_setup_writes() -> None:
    template = SidecarLayout("%i", "agentkeys-%i", "agentkeys-%i-sock")
    shipped = (REPO / "deploy" / "systemd" / "agentkeys-sidecar@.service").read_text()
    assert shipped == sidecar_unit(template, "/usr/bin/env agentkeys")
    unit = sidecar_unit(LAYOUT, "/usr/local/bin/agentkeys")
    assert "User=agentkeys-coder\n" in unit
    assert "SupplementaryGroups=agentkeys-coder-sock\n" in unit
    assert "ExecStart=/usr/local/bin/agentkeys daemon --config " in unit
    assert "AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH\n" in unit


def test_manual_start_drops_to_the_daemon_user_with_only_the_attestation_capabilities() -> None:
    line = manual_start(LAYOUT, "/usr/local/bin/agentkeys")
    assert line.startswith("setpriv --reuid=agentkeys-coder --regid=agentkeys-coder --init-groups")
    assert "--ambient-caps=+sys_ptrace,+dac_read_search" in line
    assert line.endswith("daemon --config /etc/agentkeys/sidecar/coder/daemon.toml")
    assert " -- env -i HOME=/var/lib/agentkeys-sidecar/coder " in line  # environment reset


def test_the_unit_setup_writes_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / LAYOUT.unit_name
    unit.write_text(sidecar_unit(LAYOUT, "/usr/bin/env agentkeys"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert LAYOUT.unit_name not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--agent-user", "no-such-user-here"], "no such user"),
        (["--agent-user", "root"], "must not be root"),
        (["--agent-user", "nobody", "--service", "ghe"], "not a preset"),
        (["--agent-user", "nobody", "--upstream", "openai"], "SERVICE=URL"),
        (["--dev-stack"], "no dev stack"),
        (["--agent-user", "nobody", "--tcp-port", "0"], "not a TCP port"),
        (["--agent-user", "nobody", "--tcp-port", "http"], "not a TCP port"),
        (["--dev-stack", "--tcp-port", "8790"], "own user (--agent-user)"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_done(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0 and "--dev-stack" not in argv:
        pytest.skip("the checks after the root check")
    home = tmp_path / "home"
    code = main(["sidecar", "setup", "coder", *argv, "--home", str(home), "--worker-url",
                 "http://127.0.0.1:9"])  # fmt: skip
    assert code == 2
    assert says in capsys.readouterr().err
    assert not home.exists()
