"""Example budgets: small in ``make test``, the "fuzz" profile's in ``make fuzz``."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def budget(examples: int) -> settings:
    """``examples`` per property normally; under ``--hypothesis-profile=fuzz``, the profile."""
    if settings.get_current_profile_name() == "fuzz":
        return settings()
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
