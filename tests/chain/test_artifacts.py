"""The committed contract artifacts are exactly what contracts/build.py builds from the sources."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agentkeys.chain import artifacts
from agentkeys.chain.artifacts import ARTIFACT_DIR, CONTRACT_NAMES, load_artifact
from agentkeys.chain.errors import ChainConfigError

REPO = Path(__file__).resolve().parents[2]


def test_committed_artifacts_equal_a_fresh_build() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "contracts" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_artifacts_load_with_abi_and_bytecode() -> None:
    for name in (*CONTRACT_NAMES, "P256Probe"):
        artifact = load_artifact(name)
        assert artifact.bytecode
        assert artifact.abi.functions
        assert (ARTIFACT_DIR / f"{name}.json").is_file()
    scope = load_artifact("ScopeContract").abi
    assert {"set_scope_with_webauthn", "revoke_scope_with_webauthn", "is_service_in_scope"} <= set(
        scope.functions
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda text: text.replace('"abi"', '"extra": 1, "abi"', 1), "unknown option(s)"),
        (lambda text: text.replace('"abi"', '"bytecode": "0x00", "abi"', 1), "duplicate key"),
        (
            lambda text: text.replace('"contractName": "P256Probe"', '"contractName": 5'),
            "contractName",
        ),
        (
            lambda text: text.replace('"contractName": "P256Probe"', '"contractName": "Other"'),
            "Other",
        ),
    ],
)
def test_a_malformed_artifact_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[str], str], reason: str
) -> None:
    text = (ARTIFACT_DIR / "P256Probe.json").read_text()
    name = f"Probe{abs(hash(reason))}"
    changed = change(text).replace('"contractName": "P256Probe"', f'"contractName": "{name}"')
    assert changed != text
    (tmp_path / f"{name}.json").write_text(changed)
    monkeypatch.setattr(artifacts, "ARTIFACT_DIR", tmp_path)
    with pytest.raises(
        ChainConfigError, match=f"artifact {name} is malformed: .*{re.escape(reason)}"
    ):
        artifacts.load_artifact(name)
