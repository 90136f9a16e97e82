"""The JSON-lines audit file and the pinned public surface of agentkeys.service."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import agentkeys.service
from agentkeys.config import InsecureFileError
from agentkeys.service import AuditEvent, JsonLinesAudit


async def test_json_lines_audit_is_private_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "signer.jsonl"
    audit = JsonLinesAudit(path)
    try:
        for status in (200, 403):
            await audit.record(
                AuditEvent(
                    service="signer",
                    kind="request",
                    outcome="ok" if status == 200 else "denied",
                    peer_role="worker",
                    peer_address="127.0.0.1:1",
                    route="derive_cred_kek",
                    status=status,
                    fields={"actor": "ab" * 32, "epoch": 3},
                )
            )
    finally:
        audit.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["status"] for r in rows] == [200, 403]
    assert rows[1]["outcome"] == "denied"
    assert rows[0]["fields"] == {"actor": "ab" * 32, "epoch": 3}
    assert rows[0]["time"].endswith("Z")


def test_audit_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir(mode=0o700)
    path = directory / "a.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)
    with pytest.raises(InsecureFileError):
        JsonLinesAudit(path)


def test_audit_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - the unsafe case under test
    with pytest.raises(InsecureFileError):
        JsonLinesAudit(directory / "a.jsonl")


def test_exported_members() -> None:
    assert sorted(agentkeys.service.__all__) == sorted(
        [
            "METRICS_CONTENT_TYPE",
            "OPENAPI_PATH",
            "PEER_SCOPE_KEY",
            "PUBLIC",
            "Access",
            "AuditEvent",
            "AuditSink",
            "BoundAddress",
            "Call",
            "Handler",
            "JsonLinesAudit",
            "JsonObject",
            "MemoryAudit",
            "Peer",
            "ReadinessCheck",
            "Reply",
            "Route",
            "ServerSettings",
            "ServerTls",
            "ServiceApp",
            "ServiceMetrics",
            "allow",
            "decode",
            "decode_body",
            "mtls_client",
            "openapi_document",
            "parse_json_object",
            "serve_http",
            "service_main",
        ]
    )
    for name in agentkeys.service.__all__:
        assert getattr(agentkeys.service, name) is not None
