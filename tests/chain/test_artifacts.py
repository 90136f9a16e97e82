"""The committed contract artifacts are exactly what contracts/build.py builds from the sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentkeys.chain.artifacts import ARTIFACT_DIR, CONTRACT_NAMES, load_artifact

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
