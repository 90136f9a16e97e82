from __future__ import annotations

import subprocess
import sys

import pytest

from agentkeys.cli import main


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: agentkeys" in capsys.readouterr().err


def test_console_script_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentkeys.cli", "--version"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.startswith("agentkeys ")
