"""Surface the domain error out of Trio's exception groups (nurseries always wrap)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agentkeys.errors import DOMAIN_ERRORS, DomainError

__all__ = ["raise_domain_error"]


def _first_domain_error(group: BaseExceptionGroup[BaseException]) -> DomainError | None:
    for exc in group.exceptions:
        if isinstance(exc, DOMAIN_ERRORS):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_domain_error(exc)
            if found is not None:
                return found
    return None


@contextmanager
def raise_domain_error() -> Iterator[None]:
    """Re-raise the first domain error (``DOMAIN_ERRORS``) inside an exception group, bare.

    Groups holding no domain error (bugs, KeyboardInterrupt) propagate unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        found = _first_domain_error(group)
        if found is None:
            raise
        raise found from group
