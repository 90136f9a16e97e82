"""The hash-chained audit log: append, reopen, verify, tamper detection, relay queue."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
import rfc8785

from agentkeys.daemon.auditlog import (
    GENESIS,
    AuditLog,
    AuditRelayQueue,
    AuditRow,
    AuditValue,
    VerifiedLog,
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


def test_a_row_with_a_duplicate_member_is_refused(tmp_path: Path) -> None:
    # last-wins would verify a row whose first "decision" says something else to other readers
    path = tmp_path / "log"
    _write(path, 3)
    lines = path.read_bytes().splitlines()
    lines[1] = b'{"decision":"allow",' + lines[1][1:]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AuditChainBroken) as info:
        verify_log(path)
    assert info.value.row == 2
    assert "duplicate key 'decision'" in info.value.reason
    lines[1] = b"[]"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AuditChainBroken, match="must be a JSON object"):
        verify_log(path)


def test_a_last_row_with_a_duplicate_member_is_never_continued(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 2)
    lines = path.read_bytes().splitlines()
    lines[-1] = b'{"seq":7,' + lines[-1][1:]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AuditLogError, match="last row is damaged"):
        AuditLog(path)


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


_TEXT = [
    "",
    "plain",
    "/openai/v1/chat/completions",
    '/x,"method":"GET","hash":"' + "0" * 64 + '"',  # looks like members, is one string
    'quote " backslash \\ slash /',
    "\x00\x01\x1f\x7f \t\n\r\x08\x0c",
    "\u00e9\u4e2d\u2028\u2029\ufeff\U0001f511",
    "\ud7ff\ue000\uffff",
]


def _random_row(rng: random.Random) -> AuditRow:
    def text() -> str | None:
        if rng.random() < 0.2:
            return None
        return "".join(rng.choice(_TEXT) for _ in range(rng.randrange(3)))

    def number() -> int | None:
        return None if rng.random() < 0.2 else rng.choice([0, 1, -1, 2**53 - 1, 1 - 2**53, 10**12])

    return AuditRow(
        decision=rng.choice(["allow", "deny", "error"]),
        reason=text(),
        caller_uid=number(),
        caller_pid=number(),
        caller_exe=text(),
        caller_exe_sha256=text(),
        caller_rule=text(),
        actor=text(),
        service=text(),
        method=rng.choice(["GET", "POST", "-", ',"method":']),
        path=rng.choice(_TEXT) * rng.randrange(1, 200),  # also past the 512 cut
        status=rng.choice([200, 403, 502]),
        upstream_status=number(),
        prompt_tokens=number(),
        completion_tokens=number(),
        cost_usd=None if rng.random() < 0.3 else rng.uniform(0, 5),
        duration_ms=None if rng.random() < 0.3 else rng.uniform(0, 10_000),
    )


def _rfc8785_line(seq: int, prev: str, fields: Mapping[str, AuditValue]) -> tuple[str, bytes]:
    """A row exactly as the format defines it, by the general RFC 8785 canonicaliser."""
    record: dict[str, AuditValue] = {"seq": seq, "prev": prev, **fields}
    digest = hashlib.sha256(rfc8785.dumps(record)).hexdigest()
    return digest, rfc8785.dumps({**record, "hash": digest}) + b"\n"


def test_rows_are_byte_for_byte_the_general_canonicalisers(tmp_path: Path) -> None:
    rng = random.Random(8785)
    rows = [_random_row(rng) for _ in range(400)]
    when = datetime.datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=datetime.UTC)
    relay = AuditRelayQueue(capacity=1000)
    log = AuditLog(tmp_path / "log", relay=relay)
    heads = [log.append(row, time=when) for row in rows]
    log.close()
    expected = b""
    prev = GENESIS
    for seq, row in enumerate(rows, start=1):
        digest, line = _rfc8785_line(seq, prev, row.fields(when))
        assert heads[seq - 1] == digest
        expected += line
        prev = digest
    assert (tmp_path / "log").read_bytes() == expected
    assert verify_log(tmp_path / "log") == VerifiedLog(rows=400, head=prev)
    # the relay gets the same members, in the order they always had
    queued = relay.take_batch()
    assert list(queued[0]) == ["seq", "prev", *rows[0].fields(when), "hash"]
    assert queued[0] == {"seq": 1, "prev": GENESIS, **rows[0].fields(when), "hash": heads[0]}


def test_a_log_written_the_general_way_verifies_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "log"
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    prev, lines = GENESIS, b""
    for seq in range(1, 6):
        prev, line = _rfc8785_line(seq, prev, _row(seq).fields(when))
        lines += line
    path.write_bytes(lines)
    path.chmod(0o600)
    log = AuditLog(path)
    assert (log.rows, log.head) == (5, prev)
    head = log.append(_row(6), time=when)
    log.close()
    assert head == _rfc8785_line(6, prev, _row(6).fields(when))[0]
    assert verify_log(path) == VerifiedLog(rows=6, head=head)


def test_values_outside_the_plain_schema_still_canonicalise(tmp_path: Path) -> None:
    """A float where an integer belongs takes the general canonicaliser, and verifies."""
    path = tmp_path / "log"
    log = AuditLog(path)
    row = AuditRow(**{**_row(1).__dict__, "status": 200.5})
    head = log.append(row)
    log.close()
    line = path.read_bytes()
    parsed = json.loads(line)
    assert parsed["status"] == 200.5
    assert rfc8785.dumps(parsed) + b"\n" == line
    assert verify_log(path).head == head


def test_a_row_that_is_not_valid_text_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """A caller's exe path from ``os.readlink`` may carry undecodable bytes (surrogates):
    the append fails closed with AuditLogError, the log stays intact, and the proxy's
    printable form of such a path is appended fine."""
    from agentkeys.daemon.proxy import _printable_path

    path = tmp_path / "audit.log"
    log = AuditLog(path)
    try:
        log.append(_row(0))
        raw = os.fsdecode(b"/tmp/bin-\xff/python")
        with pytest.raises(AuditLogError):
            log.append(AuditRow(**{**_row(1).__dict__, "caller_exe": raw}))
        log.append(AuditRow(**{**_row(1).__dict__, "caller_exe": _printable_path(raw)}))
    finally:
        log.close()
    rows = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[1]["caller_exe"] == "/tmp/bin-\\xff/python"
    assert verify_log(path).rows == 2
