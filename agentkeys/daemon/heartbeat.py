"""Fail closed when the broker is out of reach (SPEC.md section 8).

:class:`BrokerLiveness` is the pure state: the time of the last successful heartbeat
and the window after which the daemon refuses to serve credentials. It starts
*unreachable* (nothing is served before the first successful contact).
:func:`run_heartbeat` is the duty that probes the broker every ``interval`` seconds,
independently of cap mints. :class:`HttpBrokerProbe` probes ``GET /v1/health``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import httpx
import trio

from agentkeys.daemon.errors import BrokerUnreachable

__all__ = ["BrokerLiveness", "BrokerProbe", "HttpBrokerProbe", "run_heartbeat"]

_log = logging.getLogger("agentkeys.daemon")


class BrokerLiveness:
    """When the broker last answered, and whether that is recent enough."""

    def __init__(
        self, window: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._clock = clock
        self._last_ok: float | None = None
        #: probes failed in a row
        self.failures = 0
        #: the last failure's short description (for /readyz)
        self.last_error: str | None = None

    def record_success(self) -> None:
        """A heartbeat succeeded now."""
        if self._last_ok is not None and not self.reachable():
            _log.warning("broker reachable again; serving credentials")
        self._last_ok = self._clock()
        self.failures = 0
        self.last_error = None

    def record_failure(self, what: str) -> None:
        """A heartbeat failed now."""
        self.failures += 1
        self.last_error = what

    def reachable(self) -> bool:
        """Whether the last success lies within the window."""
        return self._last_ok is not None and self._clock() - self._last_ok <= self.window

    def seconds_since_contact(self) -> float | None:
        """Seconds since the last success, or None if never."""
        return None if self._last_ok is None else self._clock() - self._last_ok

    def require(self) -> None:
        """Raise unless the broker is reachable.

        Raises:
            BrokerUnreachable: no successful heartbeat within the window.
        """
        if not self.reachable():
            since = self.seconds_since_contact()
            detail = "never reached" if since is None else f"last reached {since:.0f} s ago"
            raise BrokerUnreachable(
                f"the broker is unreachable ({detail}); refusing to serve credentials"
            )


class BrokerProbe(Protocol):
    """One liveness check of the broker."""

    async def check(self) -> None:
        """Return when the broker answered healthy; raise ``BrokerUnreachable`` otherwise."""
        ...


class HttpBrokerProbe:
    """``GET <broker>/v1/health`` must answer 200 (the client is owned by the caller)."""

    def __init__(self, client: httpx.AsyncClient, path: str = "/v1/health") -> None:
        self._client = client
        self._path = path

    async def check(self) -> None:
        """See :class:`BrokerProbe`."""
        try:
            response = await self._client.get(self._path)
        except httpx.HTTPError as exc:
            raise BrokerUnreachable(f"heartbeat failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise BrokerUnreachable(f"heartbeat answered HTTP {response.status_code}")


async def run_heartbeat(
    probe: BrokerProbe,
    liveness: BrokerLiveness,
    *,
    interval: float = 5.0,
    probe_timeout: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Probe the broker every ``interval`` seconds until cancelled.

    ``task_status.started()`` after the first probe (successful or not).
    """
    started = False
    while True:
        try:
            with trio.fail_after(probe_timeout):
                await probe.check()
        except BrokerUnreachable as exc:
            if liveness.failures == 0:
                _log.warning("broker heartbeat failed: %s", exc.reason)
            liveness.record_failure(exc.reason)
        except trio.TooSlowError:
            if liveness.failures == 0:
                _log.warning("broker heartbeat timed out")
            liveness.record_failure("heartbeat timed out")
        else:
            liveness.record_success()
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)
