"""The typed identity of a caller, as the daemon's policy and audit see it (SPEC.md 8).

Produced by E1 (:mod:`attest.peercred`) for Unix socket callers and by E2
(:mod:`attest.netns`) for loopback TCP callers; the serving helper
(:mod:`attest.serve`) puts it into each request's ASGI scope.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Transport(enum.StrEnum):
    UNIX = "unix"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process, attested at connection time.

    Attributes:
        pid: the process id in the daemon's pid namespace.
        uid, gid: credentials at ``connect()`` time (SO_PEERCRED) for E1; the
            socket owner / process real ids for E2.
        exe_path: target of ``/proc/<pid>/exe``; a deleted binary keeps the
            kernel's `` (deleted)`` suffix, so it never matches a policy path.
        exe_sha256: sha256 of the executable's bytes, read through
            ``/proc/<pid>/exe`` (64 lowercase hex).
        start_time: process start time in clock ticks since boot.
        pidfd_checked: the pid was pinned with a pidfd (SO_PEERPIDFD) rather
            than with the start-time fallback.
    """

    pid: int
    uid: int
    gid: int
    exe_path: str
    exe_sha256: str
    start_time: int
    pidfd_checked: bool


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who is on the other end of one connection.

    ``process`` is None only for an E2 caller whose process is not visible from
    the daemon and that was accepted under the explicit "any process in this
    pod" policy (``pod_wide`` is then True).
    """

    transport: Transport
    process: ProcessIdentity | None
    pod_wide: bool = False
    peer_address: str | None = None
