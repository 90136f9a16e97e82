"""The official openai SDK, configured only by the env file, through the daemon (E2 listener)."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest
import trio

from tests.daemon.conftest import Stack
from tests.daemon.upstream import COMPLETION_TOKENS, REAL_KEY

CLIENT = Path(__file__).with_name("sdk_client.py")


async def test_openai_sdk_via_env_file(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env_path = stack.config.env_path
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    env_text = env_path.read_text()
    assert stack.address.tcp_url is not None
    assert f"OPENAI_BASE_URL={stack.address.tcp_url}/openai/v1" in env_text
    assert "OPENAI_API_KEY=agentkeys-placeholder" in env_text
    assert "AGENTKEYS_BUDGET_BASE_URL=" in env_text
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    result = await trio.run_process(
        ["bash", "-c", f'source "{env_path}" && exec "{sys.executable}" "{CLIENT}"'],
        env=clean,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    report = json.loads(out)
    assert report["chat"] == "hello there"
    assert report["stream"] == "hello"
    assert report["stream_usage"] == COMPLETION_TOKENS
    assert report["env"]["OPENAI_API_KEY"] == "agentkeys-placeholder"
    # the upstream saw the real key on both calls; the client never did
    assert [r["headers"]["authorization"] for r in stack.upstream.requests] == [
        f"Bearer {REAL_KEY}"
    ] * 2
    assert REAL_KEY not in out + err
    assert REAL_KEY not in env_text
    assert REAL_KEY not in caplog.text
    assert REAL_KEY not in stack.config.audit_path.read_text()
    rows = stack.audit_rows()
    assert [r["decision"] for r in rows] == ["allow", "allow"]
    assert {r["caller_exe"] for r in rows} == {os.readlink("/proc/self/exe")}
    assert all(r["caller_pid"] != os.getpid() for r in rows)
