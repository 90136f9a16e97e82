"""``agentkeys audit``: check the daemon's hash-chained audit log (SPEC.md section 8)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentkeys.daemon.auditlog import verify_log
from agentkeys.daemon.config import default_audit_path
from agentkeys.daemon.errors import AuditChainBroken, AuditLogError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="inspect the sidecar daemon's audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check every row's hash and chain link; name the first bad row",
        epilog="example: agentkeys audit verify --log ~/.local/state/agentkeys/daemon-audit.log "
        "--json",
    )
    verify.add_argument(
        "--log",
        type=Path,
        default=None,
        help="the audit log (default $XDG_STATE_HOME/agentkeys/daemon-audit.log)",
    )
    verify.add_argument(
        "--expect-head",
        default=None,
        help="fail unless the last row's hash equals this (a head recorded elsewhere "
        "detects a truncated tail)",
    )
    verify.add_argument(
        "--json", action="store_true", help="print one JSON object (for scripts) instead of text"
    )
    verify.set_defaults(func=_verify)


def _fail(args: argparse.Namespace, path: Path, error: str, reason: str, **extra: object) -> int:
    if args.json:
        doc = {"error": error, "reason": reason, "log": str(path), **extra}
        print(json.dumps(doc, sort_keys=True), file=sys.stderr)
    else:
        print(f"audit log {path}: {reason}", file=sys.stderr)
    return 1


def _verify(args: argparse.Namespace) -> int:
    path: Path = args.log or default_audit_path()
    try:
        result = verify_log(path)
    except AuditChainBroken as exc:
        return _fail(args, path, exc.error, f"BROKEN at row {exc.row}: {exc.reason}", row=exc.row)
    except AuditLogError as exc:
        return _fail(args, path, exc.error, exc.reason)
    if args.expect_head is not None and args.expect_head.lower() != result.head:
        return _fail(
            args,
            path,
            AuditChainBroken.error,
            f"{result.rows} rows verify, but the head {result.head} is not the expected one "
            "(rows were removed from the end, or it is another log)",
            rows=result.rows,
            head=result.head,
        )
    if args.json:
        doc = {"log": str(path), "ok": True, "rows": result.rows, "head": result.head}
        print(json.dumps(doc, sort_keys=True))
    else:
        print(f"audit log {path}: OK, {result.rows} rows, head {result.head}")
    return 0
