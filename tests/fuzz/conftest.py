"""Hypothesis profiles for the fuzz suite.

``make test`` runs each property with a small budget (see :func:`budget`); ``make fuzz``
passes ``--hypothesis-profile=fuzz`` (many more examples, no deadline). The profile is
registered here, and pytest loads this conftest before the option is applied when the run
names tests/fuzz.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

# the real broker (anvil with the contracts, SMTP sink, broker on a socket) for the
# schema-driven fuzzing of its HTTP API
from tests.broker.conftest import (  # noqa: E402, F401
    broker,
    chain,
    operator,
    smtp,
    start_broker,
)
