"""Scenario ``http``: the serving stacks on a Unix socket, from the raw floor up.

The C load generator (``bench/loadgen.c``) drives every server in
:mod:`bench._servers` in turn, at each concurrency of the profile, with
keep-alive connections (``http c=N``), and then with a new connection per
request (``http new-conn c=N``), where per-connection work such as E1
attestation is paid on every request. The servers take turns in
``profile.http_rounds`` rounds so a burst of background load hits them alike;
a row gives the total rate over its rounds and the median of each percentile.
Each server's baseline is the next simpler stack, so each ratio isolates one layer:

    hypercorn-asgi  vs raw-trio         Hypercorn's HTTP machinery
    attested-asgi   vs hypercorn-asgi   serve_attested (E1 + the lean h11 server, the
                                        daemon's stack) in place of Hypercorn
    hypercorn-quart vs hypercorn-asgi   Quart-Trio routing and JSON
    attested-quart  vs hypercorn-quart  serve_attested in place of Hypercorn, under Quart

The servers run in this process on one Trio thread; the generator is a separate
process, so on a 2-core machine each gets a core when the machine is quiet.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._errors import BenchConfigError
from bench._loadgen import LoadResult, build_loadgen, run_loadgen
from bench._model import Figures, Row
from bench._profile import Profile
from bench._servers import SERVER_NAMES, running_servers

__all__ = ["BASELINES", "combine", "failure_note", "run"]

BASELINES: dict[str, str | None] = {
    "raw-trio": None,
    "hypercorn-asgi": "raw-trio",
    "attested-asgi": "hypercorn-asgi",
    "hypercorn-quart": "hypercorn-asgi",
    "attested-quart": "hypercorn-quart",
}
_LABELS = {
    "raw-trio": "raw Trio responder (floor)",
    "hypercorn-asgi": "Hypercorn + bare ASGI",
    "attested-asgi": "attest.serve_attested + bare ASGI",
    "hypercorn-quart": "Hypercorn + Quart-Trio",
    "attested-quart": "attest.serve_attested + Quart-Trio",
}
_NEW_CONN_SERVERS = ("raw-trio", "hypercorn-asgi", "attested-asgi")
_NEW_CONN_BASELINES: dict[str, str | None] = {
    "raw-trio": None,
    "hypercorn-asgi": "raw-trio",
    "attested-asgi": "hypercorn-asgi",
}


def combine(results: Sequence[LoadResult]) -> LoadResult:
    """One result from several rounds: summed counts, total rate, median percentiles.

    Raises:
        BenchConfigError: no results (a profile needs at least one round).
    """
    if not results:
        raise BenchConfigError("no load results to combine")

    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    duration = sum(r.duration_s for r in results)
    requests = sum(r.requests for r in results)
    return LoadResult(
        conns=results[0].conns,
        duration_s=duration,
        requests=requests,
        completed=sum(r.completed for r in results),
        rps=requests / duration if duration > 0 else 0.0,
        p50_us=median([r.p50_us for r in results]),
        p90_us=median([r.p90_us for r in results]),
        p99_us=median([r.p99_us for r in results]),
        max_us=max(r.max_us for r in results),
        errors=sum(r.errors for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        reconnects=sum(r.reconnects for r in results),
        timeouts=sum(r.timeouts for r in results),
        exhausted=any(r.exhausted for r in results),
        first_bad_status=next((r.first_bad_status for r in results if r.first_bad_status), 0),
    )


def failure_note(result: LoadResult) -> str:
    """``"<n> failed requests (first status 403)"``, or empty when none failed."""
    failures = result.errors + result.non_2xx + result.timeouts
    if not failures:
        return ""
    status = f" (first status {result.first_bad_status})" if result.first_bad_status else ""
    return f"{failures} failed requests{status}"


def _row(scenario: str, name: str, rounds: Sequence[LoadResult], baseline: str | None) -> Row:
    result = combine(rounds)
    figures = Figures(
        ops=result.requests,
        seconds=result.duration_s,
        ops_per_s=result.rps,
        p50_us=result.p50_us,
        p90_us=result.p90_us,
        p99_us=result.p99_us,
    )
    notes = failure_note(result)
    return Row(
        scenario,
        name,
        _LABELS[name],
        figures,
        baseline=baseline,
        notes=notes,
        extra={
            "max_us": result.max_us,
            "errors": result.errors,
            "non_2xx": result.non_2xx,
            "timeouts": result.timeouts,
            "reconnects": result.reconnects,
            "rounds": len(rounds),
            "rps_by_round": " ".join(f"{r.rps:.0f}" for r in rounds),
        },
    )


async def _turns(
    binary: Path,
    sockets: Mapping[str, Path],
    names: Sequence[str],
    profile: Profile,
    *,
    conns: int,
    reconnect: bool,
) -> dict[str, list[LoadResult]]:
    """Every server in ``names`` runs once per round, in turn."""
    results: dict[str, list[LoadResult]] = {name: [] for name in names}
    for _ in range(profile.http_rounds):
        for name in names:
            result = await run_loadgen(
                binary,
                unix_path=sockets[name],
                conns=conns,
                duration=profile.http_duration,
                warmup=profile.http_warmup,
                reconnect=reconnect,
            )
            results[name].append(result)
    return results


async def run(profile: Profile, *, build_dir: Path) -> list[Row]:
    """Measure every server at every concurrency, then connection-per-request."""
    binary = await build_loadgen(build_dir)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentkeys-bench-") as tmp:
        os.chmod(tmp, 0o700)
        async with running_servers(Path(tmp)) as servers:
            for conns in profile.http_concurrency:
                results = await _turns(
                    binary, servers.sockets, SERVER_NAMES, profile, conns=conns, reconnect=False
                )
                rows += [
                    _row(f"http c={conns}", name, results[name], BASELINES[name])
                    for name in SERVER_NAMES
                ]
            conns = profile.reconnect_clients
            results = await _turns(
                binary, servers.sockets, _NEW_CONN_SERVERS, profile, conns=conns, reconnect=True
            )
            rows += [
                _row(f"http new-conn c={conns}", name, results[name], _NEW_CONN_BASELINES[name])
                for name in _NEW_CONN_SERVERS
            ]
    return rows
