"""Private files end 0600 in a 0700 directory, whatever was there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentkeys._files import write_private, write_public
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


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_owner_and_group_are_set_before_the_file_appears(tmp_path: Path) -> None:
    owner = (4242, 4243)
    secret = tmp_path / "daemon" / "k10.pem"
    write_private(secret, b"key", exclusive=True, owner=owner)
    st, dst = secret.stat(), secret.parent.stat()
    assert (st.st_uid, st.st_gid, _mode(secret)) == (*owner, 0o600)
    assert (dst.st_uid, dst.st_gid, _mode(secret.parent)) == (*owner, 0o700)
    shared = tmp_path / "run" / "env"
    write_private(shared, "export A=1\n", owner=owner, group=4244)
    st, dst = shared.stat(), shared.parent.stat()
    assert (st.st_uid, st.st_gid, _mode(shared)) == (4242, 4244, 0o640)
    assert (dst.st_uid, dst.st_gid, _mode(shared.parent)) == (4242, 4244, 0o710)
    # a directory of yet another user is refused, not taken over
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 4245, 4245)
    with pytest.raises(InsecureFileError, match="owned by uid 4245"):
        write_private(other / "f", b"x", owner=owner)
    assert list(other.iterdir()) == []


def test_public_file_keeps_its_directory_and_refuses_a_writable_one(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir(mode=0o755)
    os.chmod(units, 0o755)  # noqa: S103 - a shared directory, like /etc/systemd/system
    write_public(units / "a.service", "[Unit]\n")
    assert (_mode(units), _mode(units / "a.service")) == (0o755, 0o644)
    os.chmod(units, 0o777)  # noqa: S103 - the insecure state under test
    with pytest.raises(InsecureFileError, match="writable by others"):
        write_public(units / "b.service", "[Unit]\n")
    assert not (units / "b.service").exists()
