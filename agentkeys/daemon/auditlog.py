"""The daemon's tamper-evident audit log: hash-chained JSON lines (SPEC.md section 8).

One row per proxied call and per denial. Each line is the RFC 8785 JSON of an object

    {"seq": n, "prev": "<hash of row n-1>", "hash": "<this row's hash>", ...fields}

where ``hash`` = sha256 over the RFC 8785 bytes of the row *without* its ``hash`` member
(64 lowercase hex) and ``prev`` of row 1 is 64 zeros. Editing a row changes its hash
(caught at that row); recomputing the hash breaks the next row's ``prev`` (caught there);
deleting or reordering rows breaks ``seq``. Truncating the tail is only visible against a
head hash kept elsewhere (``agentkeys audit verify`` prints it; the chain audit relay
carries the row hashes off the host).

The file is 0600 in a 0700 directory, opened ``O_APPEND``; each row is one ``write`` of
one line, made before :meth:`AuditLog.append` returns (no ``fsync``).
:class:`AuditRelayQueue` keeps a bounded queue of rows for the chain audit relay
(batches; when full the oldest rows are dropped and counted: the local log stays
authoritative).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import rfc8785

from agentkeys.daemon.errors import AuditChainBroken, AuditLogError
from agentkeys.strict_json import StrictJsonError, loads_object

__all__ = [
    "GENESIS",
    "AuditLog",
    "AuditRelayQueue",
    "AuditRow",
    "VerifiedLog",
    "row_hash",
    "verify_log",
]

GENESIS = "0" * 64
AuditValue = str | int | bool | None
_MAX_LINE = 64 * 1024
_PLAIN = frozenset({str, int, bool, type(None)})
# what json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False) builds per call, built once
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# A row's members sorted: ... "duration_us", "hash", "method" ...; the line is the hashed
# bytes with the hash member put in front of the "method" member (see AuditLog.append).
_AFTER_HASH = b',"method":'


@dataclass(frozen=True, kw_only=True)
class AuditRow:
    """What one row records (no secrets: identifiers, names, numbers only).

    ``cost_usd`` and ``duration_ms`` are written as integers ``cost_nano_usd`` and
    ``duration_us`` (rows hold no floats, see :func:`_canonical`).
    """

    decision: str  # "allow" | "deny" | "error"
    reason: str | None
    caller_uid: int | None
    caller_pid: int | None
    caller_exe: str | None
    caller_exe_sha256: str | None
    caller_rule: str | None
    actor: str | None
    service: str | None
    method: str
    path: str
    status: int
    upstream_status: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    duration_ms: float | None = None

    def fields(self, time: datetime.datetime) -> dict[str, AuditValue]:
        """The row's members (without seq/prev/hash)."""
        return {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "decision": self.decision,
            "reason": self.reason,
            "caller_uid": self.caller_uid,
            "caller_pid": self.caller_pid,
            "caller_exe": self.caller_exe,
            "caller_exe_sha256": self.caller_exe_sha256,
            "caller_rule": self.caller_rule,
            "actor": self.actor,
            "service": self.service,
            "method": self.method,
            "path": self.path[:512],
            "status": self.status,
            "upstream_status": self.upstream_status,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_nano_usd": None if self.cost_usd is None else round(self.cost_usd * 1e9),
            "duration_us": None if self.duration_ms is None else round(self.duration_ms * 1e3),
        }


def _canonical(obj: Mapping[str, object]) -> bytes:
    """RFC 8785 bytes of a flat JSON object of strings, integers, booleans and nulls.

    For exactly these values (ASCII member names, no floats) RFC 8785 coincides with
    sorted-key compact JSON without ASCII escaping, which the standard library writes
    ~20x faster than a general canonicaliser; rows therefore carry no floats (costs in
    nano-USD, durations in microseconds). Anything else goes through ``rfc8785``.

    Raises:
        TypeError, ValueError: a value JSON cannot represent.
    """
    if _PLAIN.issuperset(map(type, obj.values())):
        return _JSON.encode(obj).encode("utf-8")
    return rfc8785.dumps(dict(obj))  # type: ignore[arg-type]


def row_hash(row: Mapping[str, object]) -> str:
    """sha256 (hex) of the RFC 8785 bytes of ``row`` without its ``hash`` member."""
    return hashlib.sha256(_canonical({k: v for k, v in row.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class VerifiedLog:
    """A log that verified: its row count and the hash of its last row (the head)."""

    rows: int
    head: str


def _parse_line(line: bytes, number: int) -> dict[str, object]:
    try:
        return loads_object(line, what="the row")  # a duplicate member is a forgery's seam
    except StrictJsonError as exc:
        raise AuditChainBroken(exc.reason, row=number) from None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    raise AuditChainBroken("truncated (no end of line)", row=number)
                yield number, raw[:-1]
    except OSError as exc:
        raise AuditLogError(f"cannot read the audit log {path}: {exc.strerror}") from exc


def _check_row(row: dict[str, object], number: int, prev: str) -> str:
    if row.get("seq") != number:
        raise AuditChainBroken(
            f"sequence number is {row.get('seq')!r}, expected {number}", row=number
        )
    if row.get("prev") != prev:
        raise AuditChainBroken(
            f"does not chain to row {number - 1} (row {number - 1} or {number} was changed)"
            if number > 1
            else "does not start the chain",
            row=number,
        )
    claimed = row.get("hash")
    try:
        actual = row_hash(row)
    except (TypeError, ValueError) as exc:  # rfc8785 refuses e.g. NaN
        raise AuditChainBroken("row is not canonicalisable", row=number) from exc
    if not isinstance(claimed, str) or claimed != actual:
        raise AuditChainBroken("row content does not match its hash (edited)", row=number)
    return actual


def verify_log(path: Path) -> VerifiedLog:
    """Check every row of the log at ``path``.

    Returns:
        The row count and the head hash.

    Raises:
        AuditChainBroken: ``row`` names the first bad row.
        AuditLogError: the file cannot be read.
    """
    prev = GENESIS
    count = 0
    for number, line in _lines(path):
        prev = _check_row(_parse_line(line, number), number, prev)
        count = number
    return VerifiedLog(rows=count, head=prev)


def _last_line(fd: int) -> bytes | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    chunk = min(size, _MAX_LINE + 1)
    data = os.pread(fd, chunk, size - chunk)
    if not data.endswith(b"\n"):
        raise AuditLogError("the audit log ends in a partial row; run `agentkeys audit verify`")
    cut = data.rfind(b"\n", 0, len(data) - 1)
    if cut < 0 and chunk < size:
        raise AuditLogError("the audit log's last row is too long")
    return data[cut + 1 : -1]


class AuditLog:
    """Appends hash-chained rows to ``path`` (see the module docstring).

    On open, the last row is read and checked (its own hash) to continue the chain.
    The caller closes it with :meth:`close`.

    Raises:
        AuditLogError: unsafe directory or file, unreadable or inconsistent tail.
    """

    def __init__(self, path: Path, *, relay: AuditRelayQueue | None = None) -> None:
        directory = path.parent
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        dst = directory.stat()
        if dst.st_mode & 0o077 or dst.st_uid not in (os.geteuid(), 0):
            raise AuditLogError(f"audit directory {directory} must be 0700 and ours")
        try:
            self._fd = os.open(
                path,
                os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            raise AuditLogError(f"cannot open the audit log {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(self._fd)
            if stat.S_IMODE(st.st_mode) & 0o077 or not stat.S_ISREG(st.st_mode):
                raise AuditLogError(f"audit log {path} must be a regular 0600 file")
            last = _last_line(self._fd)
            if last is None:
                self._seq, self._head = 0, GENESIS
            else:
                row = loads_object(last, what="the last row")
                seq = row.get("seq")
                if not isinstance(seq, int) or row.get("hash") != row_hash(row):
                    raise AuditLogError("the audit log's last row is damaged; verify it")
                self._seq, self._head = seq, row["hash"]
        except (ValueError, TypeError) as exc:  # StrictJsonError is a ValueError
            os.close(self._fd)
            raise AuditLogError("the audit log's last row is damaged; verify it") from exc
        except BaseException:
            os.close(self._fd)
            raise
        self.path = path
        self.relay = relay

    @property
    def head(self) -> str:
        """Hash of the last row written (64 zeros for an empty log)."""
        return self._head

    @property
    def rows(self) -> int:
        """Number of rows in the log."""
        return self._seq

    def append(self, row: AuditRow, *, time: datetime.datetime | None = None) -> str:
        """Append ``row``; returns its hash.

        Raises:
            AuditLogError: the write failed (the caller fails the request closed).
        """
        when = time or datetime.datetime.now(datetime.UTC)
        record: dict[str, object] = {"seq": self._seq + 1, "prev": self._head}
        record.update(row.fields(when))
        try:
            if _PLAIN.issuperset(map(type, record.values())):
                # One canonicalisation instead of two: the hashed bytes are the row without
                # "hash"; sorted, that member belongs right before "method" (a '"' inside a
                # JSON string is always escaped, so the first ',"method":' is the member).
                hashed = _JSON.encode(record).encode("utf-8")
                digest = hashlib.sha256(hashed).hexdigest()
                record["hash"] = digest
                cut = hashed.index(_AFTER_HASH)
                line = b'%s,"hash":"%s"%s\n' % (hashed[:cut], digest.encode("ascii"), hashed[cut:])
            else:
                digest = row_hash(record)
                record["hash"] = digest
                line = _canonical(record) + b"\n"
        except ValueError as exc:
            # e.g. a string that is not valid Unicode text: nothing is written, fail closed
            raise AuditLogError("the audit row cannot be encoded") from exc
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise AuditLogError(f"cannot append to the audit log: {exc.strerror}") from exc
        if written != len(line):
            raise AuditLogError("short write to the audit log")
        self._seq += 1
        self._head = digest
        if self.relay is not None:
            self.relay.put(record)
        return digest

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class AuditRelayQueue:
    """Bounded queue of audit rows for the chain audit relay (oldest dropped when full).

    Args:
        capacity: rows held at most.
        batch_size: rows handed out per :meth:`take_batch`.
    """

    def __init__(self, capacity: int = 10_000, batch_size: int = 100) -> None:
        if capacity < 1 or batch_size < 1:
            raise AuditLogError("relay queue capacity and batch size must be positive")
        self._rows: deque[dict[str, object]] = deque()
        self._capacity = capacity
        self._batch = batch_size
        #: rows dropped because the queue was full
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, row: dict[str, object]) -> None:
        """Queue ``row``, dropping the oldest when full."""
        if len(self._rows) >= self._capacity:
            self._rows.popleft()
            self.dropped += 1
        self._rows.append(row)

    def take_batch(self) -> list[dict[str, object]]:
        """Up to ``batch_size`` oldest rows (removed from the queue)."""
        count = min(self._batch, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def requeue(self, batch: list[dict[str, object]]) -> None:
        """Put a batch that failed to ship back in front (drops what no longer fits)."""
        room = self._capacity - len(self._rows)
        keep = batch[len(batch) - room :] if room < len(batch) else batch
        self.dropped += len(batch) - len(keep)
        self._rows.extendleft(reversed(keep))
