"""Bench-layer fixtures: a tiny profile and one load-generator build dir per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._micro import MicroBudget
from bench._profile import Profile

TINY = Profile(
    name="tiny",
    micro=MicroBudget(seconds=0.01, rounds=2, max_ops=30),
    http_duration=0.5,  # long enough for one round trip on a loaded 2-core machine
    http_warmup=0.02,
    http_rounds=1,  # one round per case keeps the suite near 30 s (combine has its own test)
    http_concurrency=(1, 3),
    reconnect_clients=2,
    chain_seconds=0.05,
    chain_tasks=2,
    mint_requests=40,
    miss_services=2,
    soak_requests=50,
    soak_seconds=0.2,
    mint_clients=(1, 2),
    mint_seconds=0.5,
    mint_warmup=0.02,
)


@pytest.fixture
def tiny() -> Profile:
    """Counts and durations small enough for the test suite (figures are not judged)."""
    return TINY


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the C load generator is compiled, shared by the session's tests."""
    return tmp_path_factory.mktemp("loadgen")
