"""Bounded budgets for a run: ``full`` (``make bench``) and ``smoke`` (tests)."""

from __future__ import annotations

from dataclasses import dataclass

from bench._micro import MicroBudget

__all__ = ["FULL", "PROFILES", "SMOKE", "Profile"]


@dataclass(frozen=True)
class Profile:
    """Every count and duration a run may use; nothing in a scenario is unbounded.

    Attributes:
        micro: per-case budget of the synchronous micro-benchmarks.
        http_duration / http_warmup: seconds of one load-generator run (measured /
            discarded first).
        http_rounds: how many times the servers take turns at each concurrency (the
            report gives the total rate and the median of each percentile).
        http_concurrency: the numbers of concurrent keep-alive clients.
        reconnect_clients: clients of the connection-per-request runs.
        chain_seconds: seconds per chain-read case.
        chain_tasks: concurrent readers in the parallel chain-read cases.
        mint_requests: pre-signed cap-mint requests per broker run (each single-use).
        mint_clients: the numbers of concurrent clients of the cap-mint runs.
        mint_seconds / mint_warmup: seconds of one cap-mint run (measured / discarded
            first): longer than an HTTP run, since at 64 clients one mint waits for the
            63 before it.
        miss_services: services (each with a stored credential) whose first request
            through the sidecar is a cache miss.
        soak_requests / soak_seconds: the memory soak through the sidecar (8 clients)
            runs until it has served ``soak_requests`` requests itself (after the
            sidecar runs' own), for at most ``soak_seconds`` (the report then says how
            many it reached), in slices of 1/30 of that time, at least two.
        cli_runs: timed process starts per CLI start-up case.
        install_litellm: build the LiteLLM peer's venv when it is missing (minutes, ~760
            MiB); otherwise its rows run only where the venv was built before.
    """

    name: str
    micro: MicroBudget
    http_duration: float
    http_warmup: float
    http_rounds: int
    http_concurrency: tuple[int, ...]
    reconnect_clients: int
    chain_seconds: float
    chain_tasks: int
    mint_requests: int
    miss_services: int
    soak_requests: int
    soak_seconds: float
    cli_runs: int = 10
    install_litellm: bool = False
    mint_clients: tuple[int, ...] = (1, 8, 64)
    mint_seconds: float = 3.0
    mint_warmup: float = 0.5


FULL = Profile(
    name="full",
    micro=MicroBudget(seconds=0.6, rounds=5, max_ops=50_000),
    http_duration=1.0,
    http_warmup=0.2,
    http_rounds=3,
    http_concurrency=(1, 8, 64),
    reconnect_clients=8,
    chain_seconds=1.5,
    chain_tasks=8,
    mint_requests=6_000,
    miss_services=16,
    soak_requests=100_000,
    soak_seconds=90.0,
    install_litellm=True,
)

SMOKE = Profile(
    name="smoke",
    micro=MicroBudget(seconds=0.02, rounds=2, max_ops=60),
    http_duration=0.2,
    http_warmup=0.05,
    http_rounds=1,
    http_concurrency=(1, 4),
    reconnect_clients=2,
    chain_seconds=0.1,
    chain_tasks=2,
    mint_requests=60,
    miss_services=3,
    soak_requests=200,
    soak_seconds=0.3,
    cli_runs=2,
    mint_clients=(1, 2),
    mint_seconds=0.3,
    mint_warmup=0.05,
)

PROFILES = {p.name: p for p in (FULL, SMOKE)}
