"""``agentkeys-migrate-s3-prefix``: eager v1 → v2 migration of one operator (SPEC.md §9 step 11).

    agentkeys-migrate-s3-prefix --config worker.toml --operator-omni <X>
        [--identity-omni <Y> | --identity-email <E>] [--delete-v1] [--dry-run] [--quiet]

Runs with the worker's configuration and identity (its signer certificate): it reads the
operator's master wallet from the registry (and checks it hashes to the operator), takes
S3 credentials the signer issues for exactly (operator, master wallet), and for every
service with a v1 object (all pages) or a legacy envelope at the v2 key:

* opens the legacy envelope with the v1 KEK (the signer re-derives it from the identity
  omni behind the wallet: ``--identity-omni``, or ``--identity-email`` to compute it);
* writes it as 0x04 under the chain's current K3 epoch at the v2 key, reads it back and
  compares the plaintext; a copy that does not verify is undone;
* with ``--delete-v1``, deletes the v1 object - only after the v2 copy verified, and
  only when the v2 key holds the same credential (a different, newer v2 credential wins
  and the v1 object is kept);
* with ``--dry-run``, writes and deletes nothing.

Each object gets one JSON line on stdout (service, keys, action, v1_deleted, error); progress
goes to stderr. Every decision is re-derived from what S3 holds, and each PUT is atomic, so a
run killed at any point (even ``kill -9``) loses nothing and the next run finishes the job;
a run over a finished operator changes nothing. Exit status: 0 all done, 1 some objects
failed, 2 usage or start-up error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import trio

from agentkeys.config import load_config
from agentkeys.errors import AgentkeysError, FormatError
from agentkeys.omni import actor_omni_for_wallet, identity_omni, normalize_hex32
from agentkeys.worker._run import open_worker_core
from agentkeys.worker._vault import MigrationAction, MigrationReport
from agentkeys.worker.config import WorkerConfig
from agentkeys.worker.errors import ChainUnavailable, MasterWalletInvalid, WorkerError
from agentkeys.worker.layout import v2_key

__all__ = ["MigrationOptions", "main", "migrate_operator"]


class MigrationOptions(argparse.Namespace):
    """Parsed command line."""

    config: Path
    operator_omni: str
    identity_omni: str | None
    identity_email: str | None
    delete_v1: bool
    dry_run: bool
    quiet: bool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentkeys-migrate-s3-prefix",
        description="Migrate an operator's v1 credentials to 0x04 envelopes at v2 keys.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the worker's TOML config")
    parser.add_argument("--operator-omni", required=True, help="the operator (64 hex)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--identity-omni", help="identity omni behind the master wallet's K4")
    who.add_argument("--identity-email", help="email identity behind the master wallet's K4")
    parser.add_argument("--delete-v1", action="store_true", help="delete verified v1 objects")
    parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


async def migrate_operator(
    config: WorkerConfig,
    *,
    operator_omni: str,
    identity: str | None,
    delete_v1: bool,
    dry_run: bool,
    out: TextIO,
    progress: TextIO | None,
) -> list[MigrationReport]:
    """Migrate every legacy credential of ``operator_omni``; one JSON line per object.

    Raises:
        MasterWalletInvalid, ChainUnavailable: the operator cannot be resolved on chain.
        WorkerError and other AgentkeysError leaves: S3 or the signer failed while listing.
    """
    operator = normalize_hex32(operator_omni)
    reports: list[MigrationReport] = []
    async with open_worker_core(config) as core:
        chain = core.chain
        try:
            wallet = await chain.master_wallet(operator)
            epoch = await chain.current_epoch()
        except AgentkeysError as exc:
            raise ChainUnavailable(f"chain read failed ({exc.error})") from None
        if wallet is None or actor_omni_for_wallet(wallet) != operator:
            raise MasterWalletInvalid("no master wallet on chain that hashes to this operator")
        async with core.vault(
            operator_omni=operator, actor_omni=operator, wallet=wallet,
            current_epoch=epoch, identity_omni=identity,
        ) as vault:  # fmt: skip
            services = await vault.legacy_services()
            total = len(services)
            if progress is not None:
                mode = " (dry run)" if dry_run else ""
                print(f"migrate: {total} credentials under operator {operator}{mode}",
                      file=progress, flush=True)  # fmt: skip
            for index, service in enumerate(services, 1):
                try:
                    report = await vault.migrate(service, delete_v1=delete_v1, dry_run=dry_run)
                except WorkerError as exc:
                    report = MigrationReport(
                        service, None, v2_key(operator, service), MigrationAction.FAILED,
                        error=exc.error, reason=exc.reason,
                    )  # fmt: skip
                reports.append(report)
                print(json.dumps(report.to_json(), sort_keys=True), file=out, flush=True)
                if progress is not None:
                    deleted = ", v1 deleted" if report.v1_deleted else ""
                    print(f"migrate: [{index}/{total}] {service}: {report.action.value}{deleted}",
                          file=progress, flush=True)  # fmt: skip
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agentkeys-migrate-s3-prefix``."""
    options = _parser().parse_args(argv, namespace=MigrationOptions())
    try:
        operator = normalize_hex32(options.operator_omni)
        identity = None
        if options.identity_omni is not None:
            identity = normalize_hex32(options.identity_omni)
        elif options.identity_email is not None:
            identity = identity_omni("email", options.identity_email)
    except FormatError as exc:
        print(f"agentkeys-migrate-s3-prefix: {exc.reason}", file=sys.stderr)
        return 2
    try:
        config = load_config(WorkerConfig, path=options.config)
        reports = trio.run(
            lambda: migrate_operator(
                config,
                operator_omni=operator,
                identity=identity,
                delete_v1=options.delete_v1,
                dry_run=options.dry_run,
                out=sys.stdout,
                progress=None if options.quiet else sys.stderr,
            )
        )
    except AgentkeysError as exc:
        print(f"agentkeys-migrate-s3-prefix: {exc.error}: {exc.reason}", file=sys.stderr)
        return 2
    failed = sum(1 for r in reports if r.action is MigrationAction.FAILED)
    if not options.quiet:
        counts: dict[str, int] = {}
        for report in reports:
            counts[report.action.value] = counts.get(report.action.value, 0) + 1
        deleted = sum(1 for r in reports if r.v1_deleted)
        summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing to do"
        print(f"migrate: done: {summary}; {deleted} v1 objects deleted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
