"""The hash-chained audit log: append, reopen, verify, tamper detection, relay queue."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import rfc8785

from agentkeys.daemon.auditlog import (
    GENESIS,
    AuditLog,
    AuditRelayQueue,
    AuditRow,
    row_hash,
    verify_log,
)
from agentkeys.daemon.errors import AuditChainBroken, AuditLogError


def _row(i: int, decision: str = "allow") -> AuditRow:
    return AuditRow(
        decision=decision,
        reason=None if decision == "allow" else "caller_not_allowed",
        caller_uid=1000,
        caller_pid=100 + i,
        caller_exe="/usr/bin/python3",
        caller_exe_sha256="a" * 64,
        caller_rule="coder",
        actor="b" * 64,
        service="openai",
        method="POST",
        path="/openai/v1/chat/completions",
        status=200,
        upstream_status=200,
        prompt_tokens=10,
        completion_tokens=i,
        cost_usd=0.001 * i,
        duration_ms=1.5,
    )


def _write(path: Path, count: int) -> None:
    log = AuditLog(path)
    try:
        for i in range(count):
            log.append(_row(i, "deny" if i % 2 else "allow"))
    finally:
        log.close()


def test_chain_verifies_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "log"
    _write(path, 3)
    log = AuditLog(path)
    assert log.rows == 3
    head = log.append(_row(9))
    log.close()
    verified = verify_log(path)
    assert (verified.rows, verified.head) == (4, head)
    rows = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert rows[0]["prev"] == GENESIS
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert all(rows[i]["prev"] == rows[i - 1]["hash"] for i in range(1, 4))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def _rewrite(path: Path, index: int, change: dict[str, object], *, rehash: bool) -> None:
    lines = path.read_bytes().splitlines()
    row = json.loads(lines[index])
    row.update(change)
    if rehash:
        row["hash"] = row_hash(row)
    lines[index] = json.dumps(row).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_rows_are_rfc8785_canonical(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = AuditLog(path)
    row = _row(3)
    log.append(AuditRow(**{**row.__dict__, "path": '/openai/v1/m\u00e9\x01"x\u2028'}))
    log.close()
    line = path.read_bytes().rstrip(b"\n")
    parsed = json.loads(line)
    assert rfc8785.dumps(parsed) == line
    assert parsed["cost_nano_usd"] == 3_000_000
    assert parsed["duration_us"] == 1500


def test_edited_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 5)
    _rewrite(path, 2, {"decision": "deny", "status": 403}, rehash=False)
    with pytest.raises(AuditChainBroken) as info:
        verify_log(path)
    assert info.value.row == 3
    assert "row 3" in info.value.reason


def test_rehashed_edit_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 5)
    _rewrite(path, 1, {"caller_uid": 0}, rehash=True)
    with pytest.raises(AuditChainBroken) as info:
        verify_log(path)
    assert info.value.row == 3


def test_deleted_row_and_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    with pytest.raises(AuditChainBroken) as info:
        verify_log(path)
    assert info.value.row == 2
    path.write_bytes(b"".join(lines)[:-5])
    with pytest.raises(AuditChainBroken) as info:
        verify_log(path)
    assert info.value.row == 4
    with pytest.raises(AuditLogError):
        AuditLog(path)  # a damaged tail is never continued


def test_unsafe_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d" / "log"
    _write(path, 1)
    os.chmod(path, 0o644)
    with pytest.raises(AuditLogError):
        AuditLog(path)
    os.chmod(path, 0o600)
    os.chmod(path.parent, 0o755)  # noqa: S103 (the unsafe case)
    with pytest.raises(AuditLogError):
        AuditLog(path)


def test_relay_queue_is_bounded_and_batched(tmp_path: Path) -> None:
    queue = AuditRelayQueue(capacity=3, batch_size=2)
    log = AuditLog(tmp_path / "log", relay=queue)
    for i in range(5):
        log.append(_row(i))
    log.close()
    assert len(queue) == 3
    assert queue.dropped == 2
    batch = queue.take_batch()
    assert [r["seq"] for r in batch] == [3, 4]
    queue.requeue(batch)
    assert [r["seq"] for r in queue.take_batch()] == [3, 4]
    assert [r["seq"] for r in queue.take_batch()] == [5]
    assert queue.take_batch() == []
