"""``dev up`` starts the daemon when ``daemon/setup.json`` names an operator and an agent,
writes the agent's env file, and a SIGTERM (which the daemon receives first) still stops the
whole stack with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from agentkeys.devstack.up import DevDaemonSetup
from tests.cli.test_dev import _processes_under, _start, _wait_exit


def _setup(state: Path, tmp: Path) -> None:
    policy = (
        f'[[caller]]\nname = "t"\nuid = {os.getuid()}\nexe = "/nonexistent"\n'
        'services = ["openai"]\n\n[service.openai]\nupstream = "http://127.0.0.1:9"\n'
        'allow = ["POST /v1/chat/completions"]\n'
    )
    setup = DevDaemonSetup(
        operator_omni="0a" * 32,
        actor_omni="0b" * 32,
        key_path=tmp / "secrets" / "k10.pem",
        policy=policy,
    )
    daemon_dir = state / "daemon"
    daemon_dir.mkdir(mode=0o700, parents=True)
    (daemon_dir / "setup.json").write_text(json.dumps(setup.to_json()))
    (daemon_dir / "setup.json").chmod(0o600)


async def test_dev_up_runs_the_daemon_and_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    _setup(state, tmp_path)
    process, up = await _start(state)
    try:
        daemon = up["components"]["daemon"]
        assert daemon["state"] == "running"
        assert daemon["actor"] == "0b" * 32
        assert up["agent_source"] == f"source {state.resolve() / 'daemon' / 'agent.env'}"
        env_text = (state / "daemon" / "agent.env").read_text()
        assert "OPENAI_API_KEY=agentkeys-placeholder" in env_text
        assert (state / "daemon" / "agent.env").stat().st_mode & 0o077 == 0
        transport = httpx.AsyncHTTPTransport(uds=daemon["socket"])
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            # this test process is not in the policy: denied by default, before anything else
            denied = await client.post("/openai/v1/chat/completions", json={})
        assert denied.status_code == 403
        assert denied.json()["error"] == "caller_not_allowed"
    finally:
        process.send_signal(signal.SIGTERM)
        code = await _wait_exit(process)
    assert code == 0
    assert _processes_under(state.resolve()) == []
    assert not (state / "dev-up.pid").exists()
