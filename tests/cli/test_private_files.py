"""Private files end 0600 in a 0700 directory, whatever was there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentkeys._files import write_private
from agentkeys.cli._bootstrap import SESSION_TOKEN_FILE, write_session
from agentkeys.config import InsecureFileError
from agentkeys.daemon.envfile import write_env_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_existing_wide_file_and_directory_are_restricted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # noqa: S103 - the insecure starting state under test
    target = home / "secret"
    target.write_text("old")
    os.chmod(target, 0o644)
    write_private(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert _mode(target) == 0o600
    assert _mode(home) == 0o700
    assert [p.name for p in home.iterdir()] == ["secret"]  # no temporary file left


def test_session_token_written_over_a_wide_one_ends_0600(tmp_path: Path) -> None:
    home = tmp_path / "agentkeys"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # noqa: S103 - the insecure starting state under test
    token = home / SESSION_TOKEN_FILE
    token.write_text("stale")
    os.chmod(token, 0o644)
    answer = {"session": "tok", "actor_omni": "", "wallet": "", "expires_at": 1}
    write_session(home, answer, "http://127.0.0.1:1")
    assert token.read_text() == "tok\n"
    assert _mode(token) == 0o600
    assert _mode(home) == 0o700
    assert all(_mode(p) == 0o600 for p in home.iterdir())


def test_env_file_over_a_wide_one_ends_0600(tmp_path: Path) -> None:
    env = tmp_path / "cfg" / "env"
    env.parent.mkdir(mode=0o700)
    env.write_text("x")
    os.chmod(env, 0o666)  # noqa: S103 - the insecure starting state under test
    write_env_file(env, "export A=1\n")
    assert (env.read_text(), _mode(env)) == ("export A=1\n", 0o600)


def test_symlink_at_the_target_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    os.chmod(elsewhere, 0o644)
    (home / "secret").symlink_to(elsewhere)
    with pytest.raises(InsecureFileError, match="symbolic link"):
        write_private(home / "secret", b"new")
    assert elsewhere.read_text() == "untouched"
    assert _mode(elsewhere) == 0o644
    assert (home / "secret").is_symlink()
    assert [p.name for p in home.iterdir()] == ["secret"]


def test_exclusive_never_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "keys" / "key-0001.pem"
    write_private(target, b"first", exclusive=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["key-0001.pem"]
