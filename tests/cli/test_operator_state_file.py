"""``operator.json`` is read strictly: what ``init`` writes loads, anything else is refused.

The refusal is :class:`OperatorStateInvalid`, naming operator.json and the member and telling
the operator to run ``agentkeys init`` again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agentkeys._files import write_private
from agentkeys.cli._errors import OperatorStateInvalid
from agentkeys.cli._operator_state import (
    STATE_FILE,
    OperatorState,
    PasskeyRecord,
    load_operator_state,
)

# operator.json exactly as the code before the strict reader wrote it (its to_json, through
# OperatorState.write), for an operator upgraded from v1 who signs in with its own wallet
WRITTEN_BEFORE = """{
  "device_key_hash": "efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef",
  "email": "op@example.org",
  "k10": {
    "backend": "software",
    "key_file": "device/k10.pem",
    "tcti": null
  },
  "legacy_identity_omni": "1212121212121212121212121212121212121212121212121212121212121212",
  "master_wallet": "own",
  "operator_omni": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
  "passkey": {
    "credential_id": "AQID",
    "dev_key_file": "passkey-dev.pem",
    "origin": "http://localhost:8080",
    "public_point": "POINT",
    "rp_id": "localhost"
  },
  "submit": "sovereign",
  "version": 1,
  "wallet": "0xabababababababababababababababababababab"
}
""".replace("POINT", bytes(range(64)).hex())


def _write(home: Path, text: str) -> None:
    write_private(home / STATE_FILE, text)


def _document() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(WRITTEN_BEFORE)
    return value


def _with(member: str, value: Any) -> str:
    """The file written before with ``member`` (dotted: ``k10.backend``) set to ``value``."""
    document = _document()
    *tables, name = member.split(".")
    table = document
    for part in tables:
        table = table[part]
    table[name] = value
    return json.dumps(document)


def _refused(home: Path, text: str) -> str:
    _write(home, text)
    with pytest.raises(OperatorStateInvalid) as info:
        load_operator_state(home)
    message = str(info.value)
    assert "operator.json" in message
    assert message.endswith("run `agentkeys init` again")
    return message


def test_a_file_written_before_loads_typed_and_is_written_back_unchanged(tmp_path: Path) -> None:
    _write(tmp_path, WRITTEN_BEFORE)
    state = load_operator_state(tmp_path)
    assert state.wallet == "0x" + "ab" * 20
    assert state.email == "op@example.org"
    assert state.master_wallet == "own"
    assert state.legacy_identity_omni == "12" * 32
    assert state.k10_key_file == tmp_path / "device" / "k10.pem"
    assert state.passkey.credential_id == b"\x01\x02\x03"
    assert state.passkey.dev_key_file == tmp_path / "passkey-dev.pem"
    assert state.passkey.public_point == bytes(range(64))
    (tmp_path / STATE_FILE).unlink()
    assert state.write(tmp_path).read_text() == WRITTEN_BEFORE


def test_members_not_recorded_are_not_written_and_load_as_none(tmp_path: Path) -> None:
    state = OperatorState(
        wallet="0x" + "ab" * 20,
        operator_omni="cd" * 32,
        device_key_hash="ef" * 32,
        passkey=PasskeyRecord(credential_id=b"\x01", public_point=bytes(64)),
    )
    document = state.to_json(tmp_path)
    assert not {"email", "master_wallet", "legacy_identity_omni"} & document.keys()
    state.write(tmp_path)
    assert load_operator_state(tmp_path) == state


@pytest.mark.parametrize(
    ("text", "member"),
    [
        (WRITTEN_BEFORE.replace('"submit"', '"email": "x@example.org",\n  "submit"'), "email"),
        (WRITTEN_BEFORE.replace('"tcti": null', '"tcti": null, "tcti": "x"'), "tcti"),
    ],
    ids=["top level", "nested"],
)
def test_a_duplicate_key_is_refused(tmp_path: Path, text: str, member: str) -> None:
    assert f"duplicate key '{member}'" in _refused(tmp_path, text)


def test_nan_is_refused(tmp_path: Path) -> None:
    text = WRITTEN_BEFORE.replace('"version": 1', '"version": 1, "x": NaN')
    assert "NaN is not allowed" in _refused(tmp_path, text)


@pytest.mark.parametrize(
    ("table", "where"),
    [("", "top level"), ("k10", "k10"), ("passkey", "passkey")],
)
def test_an_unknown_member_is_refused(tmp_path: Path, table: str, where: str) -> None:
    message = _refused(tmp_path, _with(f"{table}.surprise".lstrip("."), 1))
    assert f"[{where}]: surprise" in message


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("email", 5),
        ("master_wallet", "someone"),
        ("legacy_identity_omni", True),
        ("submit", "later"),
        ("wallet", 1),
        ("k10.backend", "hsm"),
        ("k10.key_file", ["device/k10.pem"]),
        ("passkey.rp_id", None),
        ("passkey", "AQID"),
    ],
)
def test_a_member_of_the_wrong_type_is_refused(tmp_path: Path, member: str, value: Any) -> None:
    message = _refused(tmp_path, _with(member, value))
    assert re.search(rf"malformed: {re.escape(member)}\b", message), message


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("wallet", "0x1234"),
        ("operator_omni", "zz" * 32),
        ("legacy_identity_omni", "12"),
        ("passkey.credential_id", "AQID=="),
        ("passkey.public_point", "00" * 63),
    ],
)
def test_a_malformed_value_names_its_member(tmp_path: Path, member: str, value: str) -> None:
    message = _refused(tmp_path, _with(member, value))
    assert f"malformed: {member} is malformed" in message


def test_a_missing_member_and_another_version_are_refused(tmp_path: Path) -> None:
    document = _document()
    del document["device_key_hash"]
    assert "device_key_hash is required" in _refused(tmp_path, json.dumps(document))
    assert "unsupported version" in _refused(tmp_path, json.dumps({**_document(), "version": 2}))
    assert "must be a JSON object" in _refused(tmp_path, "[]")
