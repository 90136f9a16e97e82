"""Scenario ``worker``: credential store and fetch through the worker's whole real stack.

The stack is the one ``agentkeys dev up`` runs (:mod:`bench._stack`: anvil with the
contracts, the development PKI, SeaweedFS with STS and the per-actor policies, the
signer over mutual TLS, the broker and the worker) with one registered operator whose
master K10 key we hold. Caps are signed with the broker's own K1 key (the sign-in
stages and the mint are the broker scenario's subject). Every request carries a fresh
cap and K10 PoP, so requests are built before each run and the C load generator sends
each once. ``store`` (master, own vault: KEK from the signer, seal, S3 put with
per-actor STS credentials) is measured first, then ``fetch`` (S3 get, KEK, open) of
that credential. The baseline is ``GET /v1/health`` on the same worker: its HTTP
stack alone.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

from agentkeys.cap import CapOp
from bench._loadgen import LoadResult, build_loadgen, run_loadgen, send_one, write_requests
from bench._model import Figures, Row, not_yet
from bench._profile import Profile
from bench._stack import running_dev_stack, worker_request
from bench.http import failure_note

__all__ = ["run"]

SCENARIO = "worker"
_SERVICE = "openai"
_SECRET = b"sk-bench-" + b"0" * 40
_LABELS = {
    "health": "GET /v1/health (the worker's HTTP stack)",
    "store": "POST /v1/cred/store (KEK, seal, S3 put)",
    "fetch": "POST /v1/cred/fetch (S3 get, KEK, open)",
}


def _not_yet(why: str) -> list[Row]:
    return [
        not_yet(SCENARIO, "store", _LABELS["store"], why),
        not_yet(SCENARIO, "fetch", _LABELS["fetch"], why),
    ]


def _row(case: str, result: LoadResult, baseline: str | None, note: str) -> Row:
    figures = Figures(
        ops=result.requests,
        seconds=result.duration_s,
        ops_per_s=result.rps,
        p50_us=result.p50_us,
        p90_us=result.p90_us,
        p99_us=result.p99_us,
    )
    notes = [note] if note else []
    if result.exhausted:
        notes.append("ran out of pre-built requests")
    if failure := failure_note(result):
        notes.append(failure)
    return Row(
        f"{SCENARIO} c={result.conns}",
        case,
        _LABELS[case],
        figures,
        baseline=baseline,
        notes="; ".join(notes),
        extra={"errors": result.errors, "non_2xx": result.non_2xx, "timeouts": result.timeouts},
    )


async def run(profile: Profile, *, build_dir: Path) -> list[Row]:
    """Start the dev stack, store once, then measure health, store and fetch."""
    try:
        importlib.import_module("agentkeys.devstack.up")
    except ImportError as exc:
        return _not_yet(f"agentkeys.devstack.up is not importable ({exc.name})")
    binary = await build_loadgen(build_dir)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentkeys-bench-") as tmp:
        private = Path(tmp)
        os.chmod(private, 0o700)
        async with running_dev_stack(private) as stack:
            if stack is None:
                return _not_yet("the dev stack did not start a broker and a worker")
            address = stack.worker_address
            host = f"{address[0]}:{address[1]}"

            def build(op: CapOp, count: int) -> list[bytes]:
                return [
                    worker_request(stack.signing, op, host=host, service=_SERVICE, secret=_SECRET)
                    for _ in range(count)
                ]

            await send_one(stack.worker_url, build(CapOp.STORE, 1)[0])
            await send_one(stack.worker_url, build(CapOp.FETCH, 1)[0])
            for conns in (1, profile.chain_tasks):
                health = await run_loadgen(
                    binary,
                    tcp=address,
                    conns=conns,
                    duration=profile.http_duration,
                    warmup=profile.http_warmup,
                    path="/v1/health",
                )
                rows.append(_row("health", health, None, ""))
                for op in (CapOp.STORE, CapOp.FETCH):
                    path = private / f"requests-{op.value}-{conns}"
                    count = max(4 * conns, profile.mint_requests // 4)  # a worker call is slow
                    write_requests(path, build(op, count))
                    result = await run_loadgen(
                        binary,
                        tcp=address,
                        conns=conns,
                        duration=profile.http_duration,
                        warmup=profile.http_warmup,
                        requests_file=path,
                    )
                    rows.append(_row(op.value, result, "health", "fresh cap + PoP each"))
    return rows
