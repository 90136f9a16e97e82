"""The worker's public surface is pinned (STYLE.md item 14)."""

from __future__ import annotations

import agentkeys.worker


def test_exported_names() -> None:
    assert sorted(agentkeys.worker.__all__) == sorted(
        [
            "AUTHORIZATION", "CAP_HEADER", "MAX_CREDENTIAL_BYTES", "POP_HEADER", "ROUTES",
            "CapKeySource", "CapKeysUnavailable", "ChainFacts", "ChainReader",
            "FetchedCapKeys", "Fetched", "MigrationAction", "MigrationReport", "ObjectStore",
            "Opened", "Source", "StaticCapKeys", "StorageSettings", "Vault",
            "WorkerConfig", "WorkerCore", "WorkerService", "check_chain", "handle_event",
            "lambda_handler", "open_worker_core", "require_device", "run_worker",
        ]
    )  # fmt: skip
    for name in agentkeys.worker.__all__:
        assert hasattr(agentkeys.worker, name), name


def test_every_route_has_an_authorization_entry() -> None:
    from agentkeys.worker import AUTHORIZATION, ROUTES

    assert {f"cred_{op.value}" for op in ROUTES.values()} | {"health"} == set(AUTHORIZATION)
