"""``agentkeys dev demo`` as a new user runs it: the full sidecar → broker → worker → signer
flow on the real stack (SPEC.md sections 1, 7-10), every step green, exit 0, nothing left.

The demo runs in its own process with ``TMPDIR`` inside this test's directory, so every
process it starts carries that path in its command line and can be looked for afterwards.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import trio

from agentkeys.devstack.demo import DEMO_KEY


def _processes_under(root: Path) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(root).encode() in cmdline:
            found.append(f"{entry}: {cmdline[:120].decode(errors='replace')}")
    return found


async def test_make_demo_is_green_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTKEYS_")}
    env["TMPDIR"] = str(tmp_path)
    with trio.fail_after(240):
        done = await trio.run_process(
            [sys.executable, "-m", "agentkeys.cli", "dev", "demo"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    progress = re.findall(r"^\[\s*(\d+)/(\d+)\] (.+) …$", out, re.MULTILINE)
    results = re.findall(r"^        (ok|FAILED) \(", out, re.MULTILINE)
    assert len(progress) == 12
    assert results == ["ok"] * 12
    assert out.rstrip().endswith("all steps green")
    titles = " | ".join(p[2] for p in progress)
    for needed in (
        "master bootstrap",
        "agent create",
        "K10 + K11",
        "store a key",
        "OpenAI SDK",
        "streamed",
        "denied",
        "fail closed",
        "legacy v1",
        "eager migration",
    ):
        assert needed in titles
    assert "HTTP 503 broker_unreachable" in out
    assert "HTTP 403" in out
    assert "sidecar read from v1" in out
    assert DEMO_KEY not in out  # the real key never shows (the agent saw only the placeholder)
    # the summary table lists every step once
    assert out.count("  ok  ") >= 12
    assert _processes_under(tmp_path) == []
    assert not any(name.startswith("agentkeys-demo-") for name in os.listdir(tmp_path))
