"""Quotas per (caller, service): minute, hour, daily dollars (pure)."""

from __future__ import annotations

import pytest

from agentkeys.daemon.errors import QuotaExceeded
from agentkeys.daemon.quota import QuotaBook, QuotaKey, QuotaLimits

KEY = QuotaKey("coder", "openai")
T0 = 1_800_000_000.0  # a fixed Unix time


def test_per_minute_limit_and_retry_after() -> None:
    book = QuotaBook()
    limits = QuotaLimits(per_minute=2)
    book.admit(KEY, limits, now=T0)
    book.admit(KEY, limits, now=T0 + 10)
    with pytest.raises(QuotaExceeded) as info:
        book.admit(KEY, limits, now=T0 + 20)
    assert info.value.status == 429
    assert info.value.retry_after == 40
    book.admit(KEY, limits, now=T0 + 60.5)  # the first request left the window
    # other keys are independent
    book.admit(QuotaKey("other", "openai"), limits, now=T0 + 20)


def test_per_hour_limit() -> None:
    book = QuotaBook()
    limits = QuotaLimits(per_minute=10, per_hour=3)
    for i in range(3):
        book.admit(KEY, limits, now=T0 + i * 100)
    with pytest.raises(QuotaExceeded) as info:
        book.admit(KEY, limits, now=T0 + 1000)
    assert info.value.retry_after == 2600
    book.admit(KEY, limits, now=T0 + 3600.5)


def test_daily_budget_until_utc_midnight() -> None:
    book = QuotaBook()
    limits = QuotaLimits(daily_usd=1.0)
    book.admit(KEY, limits, now=T0)
    assert book.charge(KEY, 0.6, now=T0) == pytest.approx(0.6)
    book.admit(KEY, limits, now=T0 + 1)
    book.charge(KEY, 0.6, now=T0 + 1)
    with pytest.raises(QuotaExceeded) as info:
        book.admit(KEY, limits, now=T0 + 2)
    midnight = (int(T0 // 86400) + 1) * 86400
    assert info.value.retry_after == midnight - int(T0 + 2)
    book.admit(KEY, limits, now=midnight + 1)  # a new day
    assert book.spent(KEY, now=midnight + 1) == 0.0


def test_unlimited_keeps_no_history() -> None:
    book = QuotaBook()
    for i in range(1000):
        book.admit(KEY, QuotaLimits(), now=T0 + i)
    # nothing was recorded: once a limit applies, the unlimited requests do not count
    limited = QuotaLimits(per_minute=1)
    book.admit(KEY, limited, now=T0 + 999)
    with pytest.raises(QuotaExceeded):
        book.admit(KEY, limited, now=T0 + 999)
