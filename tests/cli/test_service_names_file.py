"""services.json labels the chain's service hashes: it is read strictly, an entry whose name
does not hash to its key is dropped, and a file that cannot be read is never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentkeys.cli._names import NAMES_FILE, known_names, remember_names
from agentkeys.omni import service_hash

OPENAI, GITHUB = service_hash("openai").hex(), service_hash("github").hex()


def test_names_are_recorded_and_read_back(tmp_path: Path) -> None:
    remember_names(tmp_path, ["openai", "GitHub"])
    assert known_names(tmp_path) == {OPENAI: "openai", GITHUB: "github"}
    doc = json.loads((tmp_path / NAMES_FILE).read_text())
    assert doc == {"version": 1, "names": {OPENAI: "openai", GITHUB: "github"}}


def test_no_file_is_an_empty_table(tmp_path: Path) -> None:
    assert known_names(tmp_path) == {}


def test_an_entry_that_does_not_hash_to_its_key_is_dropped(tmp_path: Path) -> None:
    (tmp_path / NAMES_FILE).write_text(
        json.dumps({"version": 1, "names": {OPENAI: "github", GITHUB: "github", "ab" * 32: "x y"}})
    )
    assert known_names(tmp_path) == {GITHUB: "github"}  # openai's hash never reads "github"


@pytest.mark.parametrize(
    "text",
    [
        f'{{"version": 1, "names": {{"{OPENAI}": "openai", "{OPENAI}": "openai"}}}}',
        json.dumps({"version": 2, "names": {OPENAI: "openai"}}),
        json.dumps({"version": 1, "names": {OPENAI: "openai"}, "more": 1}),
        json.dumps({"version": 1, "names": {OPENAI: 7}}),
        json.dumps([OPENAI]),
        "not json",
    ],
    ids=["duplicate key", "version", "unknown member", "wrong type", "not an object", "text"],
)
def test_an_unreadable_file_is_shown_as_hashes_and_never_overwritten(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / NAMES_FILE
    path.write_text(text)
    assert known_names(tmp_path) == {}
    remember_names(tmp_path, ["github"])
    assert path.read_text() == text
    assert "services.json is unreadable or malformed" in capsys.readouterr().err
