"""Test-wide fixtures: an isolated environment for every test.

Layer-specific fixtures live in each layer's own conftest.py; fixtures that
start real components (anvil, SeaweedFS, swtpm) come from tests/stack_fixtures.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.stack_fixtures"]


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AGENTKEYS_* from the caller's shell; runtime and config dirs under tmp_path."""
    for name in list(os.environ):
        if name.startswith("AGENTKEYS_"):
            monkeypatch.delenv(name)
    runtime = tmp_path / "xdg-runtime"
    config = tmp_path / "xdg-config"
    runtime.mkdir(mode=0o700)
    config.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
