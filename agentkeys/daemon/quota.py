"""Quotas per (caller, service): requests per minute and hour, a daily dollar budget.

Pure and in-memory (one instance per daemon; Trio runs it on one thread). Time is Unix
seconds passed in by the caller. Memory is bounded: per key at most ``per_hour`` admission
times are kept, and keys come from the policy (callers × services).

* :meth:`QuotaBook.admit` counts a request that is about to be forwarded, or raises
  :class:`QuotaExceeded` with the seconds after which a retry can succeed.
* :meth:`QuotaBook.charge` adds the cost of a finished call to the key's UTC day. The
  budget is checked before a call, so calls in flight when it runs out can overshoot it
  by their own cost; the next call is refused.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from agentkeys.daemon.errors import QuotaExceeded

__all__ = ["QuotaBook", "QuotaKey", "QuotaLimits"]

_DAY = 86_400


@dataclass(frozen=True)
class QuotaKey:
    """Whose quota: a policy caller entry and a service."""

    caller: str
    service: str


@dataclass(frozen=True)
class QuotaLimits:
    """Limits of one key; 0 means unlimited."""

    per_minute: int = 0
    per_hour: int = 0
    daily_usd: float = 0.0


@dataclass
class _Usage:
    times: deque[float] = field(default_factory=deque)
    day: int = -1
    spent_usd: float = 0.0


class QuotaBook:
    """The quota state of all keys (see the module docstring)."""

    def __init__(self, max_keys: int = 4096) -> None:
        self._usage: dict[QuotaKey, _Usage] = {}
        self._max_keys = max_keys

    def _get(self, key: QuotaKey) -> _Usage:
        usage = self._usage.get(key)
        if usage is None:
            if len(self._usage) >= self._max_keys:
                # keys come from the policy; a reload can retire some: forget the oldest
                del self._usage[next(iter(self._usage))]
            usage = self._usage[key] = _Usage()
        return usage

    def admit(self, key: QuotaKey, limits: QuotaLimits, *, now: float) -> None:
        """Count one request for ``key`` at ``now`` or refuse it.

        Raises:
            QuotaExceeded: a limit is reached; ``retry_after`` says when to retry.
        """
        usage = self._get(key)
        times = usage.times
        keep = 3600.0 if limits.per_hour else 60.0
        while times and times[0] <= now - keep:
            times.popleft()
        day = int(now // _DAY)
        if usage.day != day:
            usage.day, usage.spent_usd = day, 0.0
        if limits.daily_usd > 0 and usage.spent_usd >= limits.daily_usd:
            raise QuotaExceeded(
                f"daily budget of ${limits.daily_usd:.2f} for {key.service} used up",
                retry_after=math.ceil((day + 1) * _DAY - now),
            )
        if limits.per_hour and len(times) >= limits.per_hour:
            oldest = times[len(times) - limits.per_hour]
            raise QuotaExceeded(
                f"{limits.per_hour} requests per hour to {key.service} used up",
                retry_after=math.ceil(oldest + 3600 - now),
            )
        if limits.per_minute:
            in_minute = 0
            for t in reversed(times):
                if t <= now - 60:
                    break
                in_minute += 1
            if in_minute >= limits.per_minute:
                oldest = times[len(times) - limits.per_minute]
                raise QuotaExceeded(
                    f"{limits.per_minute} requests per minute to {key.service} used up",
                    retry_after=math.ceil(oldest + 60 - now),
                )
        if limits.per_hour or limits.per_minute:
            times.append(now)
            bound = max(limits.per_hour, limits.per_minute)
            while len(times) > bound:
                times.popleft()

    def charge(self, key: QuotaKey, cost_usd: float, *, now: float) -> float:
        """Add ``cost_usd`` to ``key``'s spending of the UTC day of ``now``; returns the total."""
        usage = self._get(key)
        day = int(now // _DAY)
        if usage.day != day:
            usage.day, usage.spent_usd = day, 0.0
        if cost_usd > 0 and math.isfinite(cost_usd):
            usage.spent_usd += cost_usd
        return usage.spent_usd

    def spent(self, key: QuotaKey, *, now: float) -> float:
        """``key``'s spending on the UTC day of ``now``."""
        usage = self._usage.get(key)
        if usage is None or usage.day != int(now // _DAY):
            return 0.0
        return usage.spent_usd
