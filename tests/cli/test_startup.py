"""Lazy start-up (issue 16: every call took 2.2 s, ``--version`` included): ``--version`` and
``--help`` import no command module, and :data:`agentkeys.cli.COMMANDS` (the names and help
lines shown without importing the modules) matches what the modules register. The time
itself is measured in bench/ (``make bench``: CLI start-up), never asserted here."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from agentkeys.cli import COMMANDS, build_parser, main

HEAVY = (
    "agentkeys.chain",
    "eth_account",
    "web3",
    "boto3",
    "agentkeys.cli._errors",
    "agentkeys.cli._operator_session",
)


def _imported(*argv: str) -> set[str]:
    """Modules ``python -X importtime -m agentkeys.cli ARGV`` imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agentkeys.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.split("|")[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_no_command_module(argv: list[str]) -> None:
    modules = _imported(*argv)
    assert "argparse" in modules  # the measurement sees imports at all
    assert not {m for m in modules if m.startswith(HEAVY)}


def test_a_command_imports_only_its_group() -> None:
    modules = _imported("audit", "--help")
    assert "agentkeys.daemon.auditlog" in modules  # what the audit group needs
    assert not {
        m for m in modules if m.startswith(("agentkeys.legacy_s3", "agentkeys.passkey_page"))
    }


def test_the_table_matches_the_modules() -> None:
    full = build_parser("*")
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: help_line for name, (_, help_line) in COMMANDS.items()}


def test_usage_errors_and_help_are_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "agentkeys" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert main(["scope", "--help"]) == 0
    assert "add" in capsys.readouterr().out


def _complete(script: Path, *words: str) -> list[str]:
    """What bash completes for ``words`` (the last one partial) with ``script`` sourced."""
    line = " ".join(words)
    program = (
        f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
        f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; _shtab_agentkeys; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "agentkeys.bash"
    script.write_text(capsys.readouterr().out)
    assert _complete(script, "agentkeys", "tear") == ["teardown"]
    assert sorted(_complete(script, "agentkeys", "teardown", "--a")) == ["--agent", "--all"]
    assert sorted(_complete(script, "agentkeys", "scope", "")) == ["add", "remove", "show"]
    assert main(["completion", "fish"]) == 2  # not a shell shtab writes for


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser that runs something (it has ``func``), by its command words."""
    found = [(path, parser)] if parser.get_default("func") is not None else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(_commands(child, (*path, name)))
    return found


def test_every_command_has_help_with_an_example() -> None:
    commands = _commands(build_parser("*"))
    assert len(commands) > 25
    for path, parser in commands:
        epilog = parser.epilog or ""
        assert epilog.startswith("example: agentkeys "), path
        # the example's words start with the command's own
        assert epilog.removeprefix("example: agentkeys ").startswith(path[0]), path
