"""Choosing free TCP ports on 127.0.0.1 by bind-to-0 probing.

A probe only proves a port was free a moment ago: another process can take it
before the component binds. Launchers therefore retry with fresh ports when a
component reports "address already in use" (see ``_process.launch``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence

from agentkeys.devstack.errors import NoFreePort

LOOPBACK = "127.0.0.1"
_MAX_PORT = 65535
_ATTEMPTS = 200


def port_is_free(port: int) -> bool:
    """Whether a listening socket could bind 127.0.0.1:``port`` right now."""
    if not 0 < port <= _MAX_PORT:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def _probe_zero() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def pick_port(*, offsets: Sequence[int] = (0,), avoid: Iterable[int] = ()) -> int:
    """A port ``p`` such that ``p + o`` is free on 127.0.0.1 for every ``o`` in ``offsets``.

    Candidates come from binding port 0 (the kernel's choice); ports in ``avoid``
    (and their offsets) are never returned, so several picks for one component do
    not overlap.

    Raises:
        NoFreePort: no candidate passed after a bounded number of probes.
    """
    taken = set(avoid)
    for _ in range(_ATTEMPTS):
        base = _probe_zero()
        wanted = [base + offset for offset in offsets]
        if any(p > _MAX_PORT or p in taken for p in wanted):
            continue
        if all(port_is_free(p) for p in wanted):
            return base
    raise NoFreePort(f"no free 127.0.0.1 port with offsets {list(offsets)} found")


def pick_ports(count: int, *, offsets: Sequence[int] = (0,)) -> tuple[int, ...]:
    """``count`` distinct ports, each with its ``offsets`` free and not overlapping the others.

    Raises:
        NoFreePort: see ``pick_port``.
    """
    chosen: list[int] = []
    reserved: set[int] = set()
    for _ in range(count):
        port = pick_port(offsets=offsets, avoid=reserved)
        chosen.append(port)
        reserved.update(port + offset for offset in offsets)
    return tuple(chosen)
