"""Scenario ``attest``: what E1 caller attestation costs per connection.

Every case opens a Unix-socket connection to a listener in this process, accepts
it, does its work on the accepted socket and closes both ends, so each figure is
a per-connection cost. The peer is this Python process (its executable is what
gets hashed; the size is in the notes, and the uncached cost grows with it).

* ``accept`` (baseline): connect + accept + close.
* ``peercred``: + ``SO_PEERCRED`` only.
* ``identify-cached``: + :func:`attest.identify_unix_peer` (SO_PEERCRED,
  SO_PEERPIDFD, ``/proc`` start time twice, ``/proc/<pid>/exe`` opened and its
  digest looked up in a warm :class:`attest.ExeHashCache`).
* ``identify-uncached``: the same with an empty cache each time (sha256 of the
  whole executable).
* ``identify-nopidfd``: cached, with the start-time fallback instead of a pidfd.
* ``attestor-thread``: :meth:`attest.CallerAttestor.identify`, the path
  ``serve_attested`` takes (a hop to a worker thread, cached digest).

Scenario ``attest c=8``: eight Trio tasks, each opening a new connection per
operation (connect + accept on its own listener, attest, close), all at once, so a
row gives the aggregate rate and each connection's latency from connect to
identity. Attestation runs in worker threads bounded by a ``CapacityLimiter(4)``,
as in ``CallerAttestor``.

* ``accept-c8`` (baseline): connections only.
* ``independent-c8``: :func:`attest.identify_unix_peer` with a descriptor-table
  scanner of its own per connection: one pass over ``/proc/*/fd`` per connection,
  concurrent passes competing (how the sole-holder check ran before passes were
  shared).
* ``attestor-c8``: :meth:`attest.CallerAttestor.identify` as ``serve_attested``
  calls it: one shared scanner, a pass answers every lookup that came after the
  connection's worker thread started.
* ``accepted-ns-c8``: the same, with the accept time read on the Trio side
  (``accepted_ns``), so a connection that waited for a worker thread can take the
  answer of a pass that started while it waited.

The notes give lookups per pass (how many connections one pass answered).

E2 in scenario ``attest tcp``: a loopback TCP connection, plain (``tcp-accept``,
the baseline) and with :func:`attest.identify_tcp_peer`: find the caller's socket
(``NETLINK_SOCK_DIAG``), then the process holding its inode in ``/proc/*/fd``, then as
E1. ``identify-tcp`` finds the holder with passes of its own (the processes of the
socket's uid first); ``identify-tcp-shared`` passes the accept time, so the holder comes
from the shared scanner's pass, which, for a lone connection, is a pass over every
table started after the accept. Its cost grows with the number of processes and open
sockets on the host; the notes give the count at the time of the run.

Scenario ``attest tcp c=8``: the ``attest c=8`` set-up over loopback TCP (a listener
on 127.0.0.1 per task).

* ``tcp-accept-c8`` (baseline): connections only.
* ``tcp-own-c8``: :func:`attest.identify_tcp_peer` without the accept time: passes of
  each connection's own, concurrent passes competing.
* ``tcp-shared-c8``: the same with the accept time read on the Trio side
  (``accepted_ns``): one shared scanner (E1's), a pass answers every connection accepted
  before it started.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from attest import CallerAttestor, ExeHashCache, identify_tcp_peer, identify_unix_peer
from attest._sockdiag import HolderScanner
from attest.peercred import boot_ticks_now, read_peercred, shared_scanner
from bench._micro import measure_interleaved
from bench._model import Figures, Row, summarise
from bench._profile import Profile

__all__ = ["run"]

SCENARIO = "attest"
CONCURRENT = "attest c=8"
TCP = "attest tcp"
TCP_CONCURRENT = "attest tcp c=8"
_TASKS = 8
_THREADS = 4  # CallerAttestor's default limiter


class _Loopback:
    """A listening Unix socket in a private temporary directory (or, with ``tcp``, a
    socket on 127.0.0.1), for one scenario."""

    def __init__(self, directory: Path, *, tcp: bool = False) -> None:
        self.family = socket.AF_INET if tcp else socket.AF_UNIX
        self.listener = socket.socket(self.family, socket.SOCK_STREAM)
        if tcp:
            self.listener.bind(("127.0.0.1", 0))
            self.address: str | tuple[str, int] = self.listener.getsockname()
        else:
            self.address = os.fspath(directory / "attest.sock")
            self.listener.bind(self.address)
        self.path = self.address
        self.listener.listen(16)

    def connection(self, work: Callable[[socket.socket], object]) -> None:
        client = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            client.connect(self.address)
            accepted, _ = self.listener.accept()
            try:
                work(accepted)
            finally:
                accepted.close()
        finally:
            client.close()

    def close(self) -> None:
        self.listener.close()


def _nothing(_: socket.socket) -> object:
    return None


async def _attestor_case(loop: _Loopback, profile: Profile) -> list[int]:
    """Per-connection latencies of ``CallerAttestor.identify`` (thread hop included)."""
    attestor = CallerAttestor()
    latencies: list[int] = []
    deadline = time.perf_counter() + profile.micro.seconds
    clock = time.perf_counter_ns
    while len(latencies) < profile.micro.max_ops:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            t0 = clock()
            client.connect(loop.path)
            accepted, _ = loop.listener.accept()
            try:
                await attestor.identify(accepted)
            finally:
                accepted.close()
            latencies.append(clock() - t0)
        finally:
            client.close()
        if time.perf_counter() >= deadline:
            break
    return latencies


_Attest = Callable[[trio.socket.SocketType, int], Awaitable[object]]


async def _concurrent_round(
    directory: Path,
    attest: _Attest | None,
    seconds: float,
    max_ops: int,
    *,
    tcp: bool = False,
) -> tuple[list[int], float]:
    """``_TASKS`` tasks opening a connection per operation for ``seconds``.

    Each task listens on a Unix socket in ``directory`` or, with ``tcp``, on 127.0.0.1.

    Returns the latencies (connect to identity, ns) and the wall time it took.
    """
    latencies: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds
    per_task = max(1, max_ops // _TASKS)
    family = socket.AF_INET if tcp else socket.AF_UNIX

    async def task(index: int) -> None:
        path = os.fspath(directory / f"c{index}.sock")
        with trio.socket.socket(family, socket.SOCK_STREAM) as listener:
            await listener.bind(("127.0.0.1", 0) if tcp else path)
            address = listener.getsockname()
            listener.listen(4)
            for _ in range(per_task):
                with trio.socket.socket(family, socket.SOCK_STREAM) as client:
                    t0 = clock()
                    await client.connect(address)
                    accepted, _ = await listener.accept()
                    with accepted:
                        if attest is not None:
                            await attest(accepted, time.monotonic_ns())
                    latencies.append(clock() - t0)
                if time.perf_counter() >= deadline:
                    break
        if not tcp:
            os.unlink(path)

    begin = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(_TASKS):
            nursery.start_soon(task, index)
    return latencies, time.perf_counter() - begin


async def _concurrent_cases(directory: Path, profile: Profile) -> list[Row]:
    """The ``attest c=8`` rows, cases taking turns in ``profile.micro.rounds`` rounds."""
    cache = ExeHashCache()
    limiter = trio.CapacityLimiter(_THREADS)
    attestor = CallerAttestor(limiter=trio.CapacityLimiter(_THREADS))

    async def independent(sock: trio.socket.SocketType, _: int) -> object:
        def blocking() -> object:
            return identify_unix_peer(
                sock,  # type: ignore[arg-type]  # a trio socket has what is read
                cache=cache,
                accepted_at=boot_ticks_now(),
                scanner=HolderScanner(),
            )

        return await trio.to_thread.run_sync(blocking, limiter=limiter)

    async def through_attestor(sock: trio.socket.SocketType, _: int) -> object:
        return await attestor.identify(sock)  # type: ignore[arg-type]

    async def with_accept_time(sock: trio.socket.SocketType, accepted_ns: int) -> object:
        accepted_at = boot_ticks_now()

        def blocking() -> object:
            return identify_unix_peer(
                sock,  # type: ignore[arg-type]
                cache=cache,
                accepted_at=accepted_at,
                accepted_ns=accepted_ns,
            )

        return await trio.to_thread.run_sync(blocking, limiter=limiter)

    cases: dict[str, _Attest | None] = {
        "accept-c8": None,
        "independent-c8": independent,
        "attestor-c8": through_attestor,
        "accepted-ns-c8": with_accept_time,
    }
    figures, ratio = await _take_turns(directory, cases, profile)
    return [
        Row(CONCURRENT, "accept-c8", "8 tasks, a new connection each op", figures["accept-c8"]),
        Row(
            CONCURRENT,
            "independent-c8",
            "+ identify_unix_peer, a /proc pass per connection",
            figures["independent-c8"],
            baseline="accept-c8",
            notes="4 threads, passes not shared",
        ),
        Row(
            CONCURRENT,
            "attestor-c8",
            "+ CallerAttestor.identify (shared passes)",
            figures["attestor-c8"],
            baseline="accept-c8",
            notes=ratio["attestor-c8"],
        ),
        Row(
            CONCURRENT,
            "accepted-ns-c8",
            "+ identify_unix_peer, shared passes, accept time",
            figures["accepted-ns-c8"],
            baseline="accept-c8",
            notes=ratio["accepted-ns-c8"],
        ),
    ]


async def _take_turns(
    directory: Path, cases: dict[str, _Attest | None], profile: Profile, *, tcp: bool = False
) -> tuple[dict[str, Figures], dict[str, str]]:
    """Concurrent ``cases`` taking turns in ``profile.micro.rounds`` rounds.

    Returns each case's figures and a note on its shared passes (lookups per pass of
    :func:`attest.peercred.shared_scanner`).
    """
    shared = shared_scanner()
    latencies: dict[str, list[int]] = {name: [] for name in cases}
    wall = dict.fromkeys(cases, 0.0)
    per_pass: dict[str, list[int]] = {name: [0, 0] for name in cases}
    budget = profile.micro
    for _ in range(budget.rounds):
        for name, attest in cases.items():
            lookups, passes = shared.lookups, shared.passes
            samples, seconds = await _concurrent_round(
                directory, attest, budget.seconds / budget.rounds, budget.max_ops, tcp=tcp
            )
            latencies[name] += samples
            wall[name] += seconds
            per_pass[name][0] += shared.lookups - lookups
            per_pass[name][1] += shared.passes - passes

    def ratio(name: str) -> str:
        lookups, passes = per_pass[name]
        return f"{lookups / passes:.1f} lookups/pass" if passes else "no shared pass"

    figures = {name: summarise(latencies[name], seconds=wall[name]) for name in cases}
    return figures, {name: ratio(name) for name in cases}


async def _tcp_concurrent_cases(directory: Path, profile: Profile) -> list[Row]:
    """The ``attest tcp c=8`` rows (E2), as ``attest c=8``."""
    cache = ExeHashCache()
    limiter = trio.CapacityLimiter(_THREADS)

    def case(with_accept_time: bool) -> _Attest:
        async def attest(sock: trio.socket.SocketType, accepted_ns: int) -> object:
            accepted_at = boot_ticks_now()

            def blocking() -> object:
                return identify_tcp_peer(
                    sock,  # type: ignore[arg-type]  # a trio socket has what is read
                    cache=cache,
                    accepted_at=accepted_at,
                    accepted_ns=accepted_ns if with_accept_time else None,
                )

            return await trio.to_thread.run_sync(blocking, limiter=limiter)

        return attest

    cases: dict[str, _Attest | None] = {
        "tcp-accept-c8": None,
        "tcp-own-c8": case(with_accept_time=False),
        "tcp-shared-c8": case(with_accept_time=True),
    }
    figures, ratio = await _take_turns(directory, cases, profile, tcp=True)
    return [
        Row(
            TCP_CONCURRENT,
            "tcp-accept-c8",
            "8 tasks, a new loopback TCP connection each op",
            figures["tcp-accept-c8"],
        ),
        Row(
            TCP_CONCURRENT,
            "tcp-own-c8",
            "+ identify_tcp_peer, passes of its own",
            figures["tcp-own-c8"],
            baseline="tcp-accept-c8",
            notes="4 threads, passes not shared",
        ),
        Row(
            TCP_CONCURRENT,
            "tcp-shared-c8",
            "+ identify_tcp_peer, shared passes, accept time",
            figures["tcp-shared-c8"],
            baseline="tcp-accept-c8",
            notes=ratio["tcp-shared-c8"],
        ),
    ]


async def run(profile: Profile) -> list[Row]:
    """Measure per-connection attestation cost against a plain accept."""
    cache = ExeHashCache()

    def identify_cached(sock: socket.socket) -> object:
        return identify_unix_peer(sock, cache=cache, accepted_at=boot_ticks_now())

    def identify_uncached(sock: socket.socket) -> object:
        return identify_unix_peer(sock, cache=ExeHashCache(1), accepted_at=boot_ticks_now())

    def identify_nopidfd(sock: socket.socket) -> object:
        return identify_unix_peer(sock, cache=cache, accepted_at=boot_ticks_now(), use_pidfd=False)

    def identify_tcp(sock: socket.socket) -> object:
        return identify_tcp_peer(sock, cache=cache, accepted_at=boot_ticks_now())

    def identify_tcp_shared(sock: socket.socket) -> object:
        return identify_tcp_peer(
            sock, cache=cache, accepted_at=boot_ticks_now(), accepted_ns=time.monotonic_ns()
        )

    exe_bytes = os.stat("/proc/self/exe").st_size
    with tempfile.TemporaryDirectory(prefix="agentkeys-bench-") as tmp:
        os.chmod(tmp, 0o700)
        loop = _Loopback(Path(tmp))
        try:
            works: dict[str, Callable[[socket.socket], object]] = {
                "accept": _nothing,
                "peercred": read_peercred,
                "identify-cached": identify_cached,
                "identify-uncached": identify_uncached,
                "identify-nopidfd": identify_nopidfd,
            }
            figures = measure_interleaved(
                [(name, _bind(loop, work)) for name, work in works.items()], profile.micro
            )
            thread_latencies = await _attestor_case(loop, profile)
            thread_seconds = sum(thread_latencies) / 1e9
        finally:
            loop.close()
        concurrent_rows = await _concurrent_cases(Path(tmp), profile)
        tcp_loop = _Loopback(Path(tmp), tcp=True)
        try:
            tcp_figures = measure_interleaved(
                [
                    ("tcp-accept", _bind(tcp_loop, _nothing)),
                    ("identify-tcp", _bind(tcp_loop, identify_tcp)),
                    ("identify-tcp-shared", _bind(tcp_loop, identify_tcp_shared)),
                ],
                profile.micro,
            )
        finally:
            tcp_loop.close()
        tcp_concurrent_rows = await _tcp_concurrent_cases(Path(tmp), profile)
    processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
    exe = f"peer exe {os.path.basename(sys.executable)} {exe_bytes / 1024:.0f} KiB"
    return [
        Row(SCENARIO, "accept", "Unix connect + accept + close (plain)", figures["accept"]),
        Row(SCENARIO, "peercred", "+ SO_PEERCRED", figures["peercred"], baseline="accept"),
        Row(
            SCENARIO,
            "identify-cached",
            "+ identify_unix_peer, exe hash cached",
            figures["identify-cached"],
            baseline="accept",
            notes="pidfd-pinned",
        ),
        Row(
            SCENARIO,
            "identify-uncached",
            "+ identify_unix_peer, exe hash uncached",
            figures["identify-uncached"],
            baseline="accept",
            notes=exe,
        ),
        Row(
            SCENARIO,
            "identify-nopidfd",
            "+ identify_unix_peer, cached, no pidfd",
            figures["identify-nopidfd"],
            baseline="accept",
            notes="start-time fallback",
        ),
        Row(
            SCENARIO,
            "attestor-thread",
            "+ CallerAttestor.identify (trio thread hop)",
            summarise(thread_latencies, seconds=thread_seconds),
            baseline="accept",
            notes="the serve_attested path",
        ),
        Row(
            TCP,
            "tcp-accept",
            "loopback TCP connect + accept + close",
            tcp_figures["tcp-accept"],
        ),
        Row(
            TCP,
            "identify-tcp",
            "+ identify_tcp_peer (E2), exe hash cached",
            tcp_figures["identify-tcp"],
            baseline="tcp-accept",
            notes=f"{processes} processes on the host",
        ),
        Row(
            TCP,
            "identify-tcp-shared",
            "+ identify_tcp_peer, shared scanner, accept time",
            tcp_figures["identify-tcp-shared"],
            baseline="tcp-accept",
            notes="a pass of every table per connection",
        ),
        *concurrent_rows,
        *tcp_concurrent_rows,
    ]


def _bind(loop: _Loopback, work: Callable[[socket.socket], object]) -> Callable[[], object]:
    def operation() -> object:
        loop.connection(work)
        return None

    return operation
