"""``agentkeys dev up|down|status`` as a user runs them: a real subprocess, real components.

Stopping is tested both ways (SIGINT as Ctrl-C sends it, and ``dev down``), and afterwards no
process started for the state directory may be left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from agentkeys.cli._errors import EXIT_NO_STATE
from agentkeys.service import mtls_client

CLI = [sys.executable, "-m", "agentkeys.cli", "dev"]


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


async def _start(state: Path) -> tuple[trio.Process, dict[str, Any]]:
    process = await trio.lowlevel.open_process(
        [*CLI, "up", "--state-dir", str(state), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(90):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some(65536)
            if not chunk:
                err = b""
                if process.stderr is not None:
                    err = bytes(await process.stderr.receive_some(65536))
                raise AssertionError(f"dev up exited: {err.decode(errors='replace')}")
            buffer += bytes(chunk)
    return process, json.loads(buffer.split(b"\n", 1)[0])


async def _wait_exit(process: trio.Process) -> int:
    with trio.fail_after(90):
        return await process.wait()


def _processes_under(state: Path) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        text = cmdline.decode(errors="replace")
        if str(state) in text:
            found.append(f"{entry}: {text[:120]}")
    return found


async def test_dev_up_serves_the_stack_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    process, up = await _start(state)
    try:
        components = up["components"]
        assert components["anvil"]["state"] == "running"
        assert components["contracts"]["state"] == "deployed"
        assert components["seaweedfs"]["state"] == "running"
        assert components["signer"]["state"] == "running"
        assert components["signer"]["url"].startswith("https://127.0.0.1:")
        assert components["pki"]["state"] == "ready"
        for name in ("smtp-sink", "broker", "worker", "daemon", "swtpm"):
            assert name in components  # running, waiting (daemon) or "not installed" (swtpm)
        assert up["source"] == f"source {state.resolve() / 'env.sh'}"
        env_file = state / "env.sh"
        assert env_file.stat().st_mode & 0o077 == 0
        env_text = env_file.read_text()
        assert f"AGENTKEYS_CHAIN_RPC_URL={components['anvil']['url']}" in env_text
        assert "AGENTKEYS_CHAIN_DEPLOYMENT=" in env_text

        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.post(
                components["anvil"]["url"],
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "eth_getCode",
                    "params": [components["contracts"]["registry"], "latest"],
                },
            )
        assert len(answer.json()["result"]) > 2  # the registry is deployed
        pki = state / "pki"
        async with mtls_client(
            base_url=components["signer"]["url"],
            ca=pki / "ca.crt",
            cert=pki / "worker.crt",
            key=pki / "worker.key",
        ) as worker:
            status = await worker.get("/status")
        assert status.status_code == 200
        assert status.json()["current_epoch"] == 1

        shown = await trio.to_thread.run_sync(_dev, "status", "--state-dir", str(state), "--json")
        assert shown.returncode == 0
        assert json.loads(shown.stdout)["running"] is True

        second = await trio.to_thread.run_sync(_dev, "up", "--state-dir", str(state))
        assert second.returncode == 1
        assert "already runs" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        process.send_signal(signal.SIGINT)
        code = await _wait_exit(process)
    assert code == 0
    assert _processes_under(state.resolve()) == []
    assert not (state / "dev-up.pid").exists()
    after = await trio.to_thread.run_sync(_dev, "status", "--state-dir", str(state))
    assert after.returncode == EXIT_NO_STATE
    assert "dev up" in after.stdout


async def test_dev_down_stops_it_and_a_restart_keeps_the_deployment(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    process, first = await _start(state)
    try:
        down = await trio.to_thread.run_sync(_dev, "down", "--state-dir", str(state))
        assert down.returncode == 0, down.stderr
        assert "stopped" in down.stdout
        assert await _wait_exit(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            await process.wait()
    assert _processes_under(state.resolve()) == []
    record = json.loads((state / "deployment.json").read_text())

    process, second = await _start(state)
    try:
        # the chain was kept, so the same deployment is reused, not redeployed
        assert second["components"]["contracts"] == first["components"]["contracts"]
        assert json.loads((state / "deployment.json").read_text()) == record
    finally:
        process.send_signal(signal.SIGTERM)
        assert await _wait_exit(process) == 0
    assert _processes_under(state.resolve()) == []
    nothing = await trio.to_thread.run_sync(_dev, "down", "--state-dir", str(state))
    assert nothing.returncode == 0
    assert "no dev stack" in nothing.stdout
