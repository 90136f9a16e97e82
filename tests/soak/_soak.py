"""The daemon under N concurrent clients for a bounded time: errors, memory, descriptors.

:func:`soak` starts the process stack (tests/faults/_stack.py: chain, SeaweedFS, signer,
broker, worker, and the daemon in its own process in front of an upstream of ours), stores a
credential per service, and drives the daemon's loopback TCP listener with the C load
generator from bench/ (``bench/loadgen.c``: keep-alive HTTP/1.1, closed loop, one
connection per client; it reconnects transparently when the daemon closes a keep-alive
connection after its request limit). The load runs in slices, each on another service's
path, so the credential cache, policy and upstream pool of several services are exercised.
After each slice (its connections closed) the daemon's RSS (``/proc/<pid>/status``) and open
descriptors (``/proc/<pid>/fd``) are read; a sampler also reads them every half second
during the load.

"Flat" is judged from the first measured slice on (imports, pools and caches have reached
their size by then; the daemon keeps up to one idle upstream connection per concurrent
client in its bounded pool): the last reading may exceed the first measured one by at most
:data:`RSS_SLACK_KIB` and the descriptor count by at most :data:`FD_SLACK`, and the
descriptors after the run may exceed those before the load by at most one per client (that
pool) plus :data:`FD_SLACK`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bench._loadgen import LoadResult, build_loadgen, run_loadgen
from tests.faults._load import warm
from tests.faults._stack import UPSTREAM_PATH, process_stack, running_daemon, store_credentials

SERVICES = [f"soak-{index}" for index in range(4)]
RSS_SLACK_KIB = 24 * 1024  # allocator noise on a ~100 MiB Python process; a leak of ~1 KiB per
# request would exceed it within the short run's ~10,000 requests
FD_SLACK = 16  # idle keep-alive connections in the daemon's bounded pools come and go; a leak
# of one descriptor per request or per connection would exceed it at once
_BUILD_DIR = Path(__file__).resolve().parents[2] / "bench" / "results" / "bin"


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settle(pid: int, *, limit: float = 3.0) -> None:
    """Until the descriptor count of ``pid`` stops falling (at most ``limit`` seconds): the
    load generator's connections are closed by the time its run returns, the daemon's side
    of them a moment later."""
    with trio.move_on_after(limit):
        previous = fd_count(pid)
        while True:
            await trio.sleep(0.25)
            current = fd_count(pid)
            if current >= previous:
                return
            previous = current


@dataclass
class SoakResult:
    """What the soak saw: per-slice load figures and the daemon's readings."""

    clients: int
    seconds: float
    fds_before: int = 0  # before any load (after one request per service)
    slices: list[LoadResult] = field(default_factory=list)
    rss_after_slice: list[int] = field(default_factory=list)  # KiB, the first is the warm-up
    fds_after_slice: list[int] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    fd_samples: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(r.completed for r in self.slices)

    @property
    def failures(self) -> int:
        return sum(r.errors + r.non_2xx + r.timeouts for r in self.slices)

    @property
    def rss_growth_kib(self) -> int:
        """Growth from the first measured slice to the last."""
        return self.rss_after_slice[-1] - self.rss_after_slice[min(1, len(self.slices))]

    @property
    def fd_growth(self) -> int:
        """Growth from the first measured slice to the last."""
        return self.fds_after_slice[-1] - self.fds_after_slice[min(1, len(self.slices))]

    def problems(self) -> list[str]:
        """Why the soak failed (empty: it held)."""
        out = []
        if self.failures:
            bad = [r for r in self.slices if r.errors or r.non_2xx or r.timeouts]
            out.append(
                f"{self.failures} failed requests (first bad status {bad[0].first_bad_status}; "
                f"errors {bad[0].errors}, non-2xx {bad[0].non_2xx}, timeouts {bad[0].timeouts})"
            )
        if any(r.exhausted or r.completed == 0 for r in self.slices):
            out.append("a slice completed no requests")
        if self.rss_growth_kib > RSS_SLACK_KIB:
            out.append(f"RSS grew {self.rss_growth_kib} KiB after warm-up: {self.rss_after_slice}")
        if self.fd_growth > FD_SLACK:
            out.append(f"descriptors grew by {self.fd_growth}: {self.fds_after_slice}")
        if self.fds_after_slice[-1] - self.fds_before > self.clients + FD_SLACK:
            out.append(
                f"descriptors after the run exceed those before it ({self.fds_before}) by more "
                f"than one per client: {self.fds_after_slice}"
            )
        return out

    def summary(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "requests": self.requests,
            "failures": self.failures,
            "rps": round(self.requests / max(self.seconds, 1e-9)),
            "reconnects": sum(r.reconnects for r in self.slices),
            "rss_kib_after_slices": self.rss_after_slice,
            "rss_kib_max": max(self.rss_samples, default=0),
            "fds_before": self.fds_before,
            "fds_after_slices": self.fds_after_slice,
            "fds_max_under_load": max(self.fd_samples, default=0),
            "problems": self.problems(),
        }


async def soak(
    directory: Path,
    *,
    seconds: float,
    clients: int,
    slice_seconds: float = 30.0,
    warmup_seconds: float = 3.0,
) -> SoakResult:
    """Run the soak for ``seconds`` (after a warm-up slice) with ``clients`` connections."""
    binary = await build_loadgen(_BUILD_DIR)
    result = SoakResult(clients=clients, seconds=seconds)
    async with process_stack(directory) as stack:
        await store_credentials(stack, SERVICES)
        python = await trio.to_thread.run_sync(os.path.realpath, sys.executable)
        loadgen = await trio.to_thread.run_sync(os.path.realpath, binary)
        async with running_daemon(stack, services=SERVICES, exes=[loadgen, python]) as daemon:
            await warm(daemon.url, SERVICES)
            pid = daemon.process.pid
            result.fds_before = fd_count(pid)
            plan = [warmup_seconds]
            remaining = seconds
            while remaining > 0:
                plan.append(min(slice_seconds, remaining))
                remaining -= plan[-1]
            async with trio.open_nursery() as nursery:

                async def sample() -> None:
                    while True:
                        result.rss_samples.append(rss_kib(pid))
                        result.fd_samples.append(fd_count(pid))
                        await trio.sleep(0.5)

                nursery.start_soon(sample)
                for index, duration in enumerate(plan):
                    service = SERVICES[index % len(SERVICES)]
                    load = await run_loadgen(
                        binary,
                        tcp=daemon.tcp,
                        conns=clients,
                        duration=duration,
                        warmup=0.0,
                        path=f"/{service}{UPSTREAM_PATH}",
                    )
                    await settle(pid)  # the daemon closes the finished connections
                    if index > 0:
                        result.slices.append(load)
                    elif load.errors or load.non_2xx or load.timeouts:
                        result.slices.append(load)  # a failing warm-up counts too
                    result.rss_after_slice.append(rss_kib(pid))
                    result.fds_after_slice.append(fd_count(pid))
                nursery.cancel_scope.cancel()
    return result
