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

E2 in scenario ``attest tcp``: a loopback TCP connection, plain (``tcp-accept``,
the baseline) and with :func:`attest.identify_tcp_peer` (``identify-tcp``: find the
caller's socket in ``/proc/net/tcp``, then the process holding its inode by
scanning ``/proc/*/fd``, then as E1). Its cost grows with the number of processes
and open sockets on the host; the notes give the count at the time of the run.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from attest import CallerAttestor, ExeHashCache, identify_tcp_peer, identify_unix_peer
from attest.peercred import boot_ticks_now, read_peercred
from bench._micro import measure_interleaved
from bench._model import Row, summarise
from bench._profile import Profile

__all__ = ["run"]

SCENARIO = "attest"


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
        tcp_loop = _Loopback(Path(tmp), tcp=True)
        try:
            tcp_figures = measure_interleaved(
                [
                    ("tcp-accept", _bind(tcp_loop, _nothing)),
                    ("identify-tcp", _bind(tcp_loop, identify_tcp)),
                ],
                profile.micro,
            )
        finally:
            tcp_loop.close()
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
            "attest tcp",
            "tcp-accept",
            "loopback TCP connect + accept + close",
            tcp_figures["tcp-accept"],
        ),
        Row(
            "attest tcp",
            "identify-tcp",
            "+ identify_tcp_peer (E2), exe hash cached",
            tcp_figures["identify-tcp"],
            baseline="tcp-accept",
            notes=f"{processes} processes on the host",
        ),
    ]


def _bind(loop: _Loopback, work: Callable[[socket.socket], object]) -> Callable[[], object]:
    def operation() -> object:
        loop.connection(work)
        return None

    return operation
