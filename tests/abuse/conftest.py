"""Abuse suites run against the real services: the broker fixtures of tests/broker."""

from __future__ import annotations

from tests.broker.conftest import (  # noqa: F401
    broker,
    chain,
    operator,
    smtp,
    start_broker,
)
