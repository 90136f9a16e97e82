"""``session.json`` is read strictly: what ``write_session`` writes loads, anything else is
:class:`NoSession` (exit code 3) naming the file and the member and saying how to sign in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agentkeys._files import write_private
from agentkeys.cli._bootstrap import SESSION_FILE, SESSION_TOKEN_FILE, load_session, write_session
from agentkeys.cli._errors import EXIT_NO_STATE, NoSession

EXPIRES = int(time.time()) + 3600

# session.json exactly as write_session wrote it before the strict reader
WRITTEN_BEFORE = f"""{{
  "broker_url": "http://127.0.0.1:8443",
  "actor_omni": "{"cd" * 32}",
  "wallet": "0xabababababababababababababababababababab",
  "expires_at": {EXPIRES}
}}
"""


def _write(home: Path, text: str) -> None:
    write_private(home / SESSION_TOKEN_FILE, b"j1.token.sig\n")
    write_private(home / SESSION_FILE, text)


def _refused(home: Path, text: str) -> str:
    _write(home, text)
    with pytest.raises(NoSession) as info:
        load_session(home)
    assert info.value.exit_code == EXIT_NO_STATE
    message = str(info.value)
    assert f"{home / SESSION_FILE} is malformed: " in message
    assert message.endswith("sign in again: `agentkeys session renew`")
    return message


def test_a_file_written_before_loads_and_write_session_writes_the_same(tmp_path: Path) -> None:
    _write(tmp_path, WRITTEN_BEFORE)
    record = load_session(tmp_path)
    assert (record.token, record.broker_url, record.expires_at) == (
        "j1.token.sig",
        "http://127.0.0.1:8443",
        EXPIRES,
    )
    assert record.actor_omni == "cd" * 32
    assert record.wallet == "0x" + "ab" * 20
    answer = {
        "session": "j1.token.sig",
        "actor_omni": record.actor_omni,
        "wallet": record.wallet,
        "expires_at": EXPIRES,
    }
    assert write_session(tmp_path, answer, record.broker_url) == record
    assert (tmp_path / SESSION_FILE).read_text() == WRITTEN_BEFORE


def test_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    text = WRITTEN_BEFORE.replace('"wallet"', '"wallet": "0x00",\n  "wallet"')
    assert "duplicate key 'wallet'" in _refused(tmp_path, text)


def test_an_unknown_member_is_refused(tmp_path: Path) -> None:
    text = json.dumps({**json.loads(WRITTEN_BEFORE), "token": "j1"})
    assert "[top level]: token" in _refused(tmp_path, text)


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("expires_at", str(EXPIRES)),
        ("expires_at", True),
        ("expires_at", EXPIRES + 0.5),
        ("wallet", None),
        ("broker_url", ["http://127.0.0.1:8443"]),
        ("actor_omni", 1),
    ],
)
def test_a_member_of_the_wrong_type_is_refused(tmp_path: Path, member: str, value: Any) -> None:
    text = json.dumps({**json.loads(WRITTEN_BEFORE), member: value})
    assert f"malformed: {member}: " in _refused(tmp_path, text)


def test_a_missing_member_nan_and_a_non_object_are_refused(tmp_path: Path) -> None:
    document = json.loads(WRITTEN_BEFORE)
    del document["expires_at"]
    assert "expires_at is required" in _refused(tmp_path, json.dumps(document))
    text = WRITTEN_BEFORE.replace(str(EXPIRES), "NaN")
    assert "NaN is not allowed" in _refused(tmp_path, text)
    assert "must be a JSON object" in _refused(tmp_path, "[]")
