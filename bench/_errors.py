"""Errors of the benchmark harness (a tool, not part of the product's error tree)."""

from __future__ import annotations

__all__ = ["BenchConfigError", "BenchError", "LoadgenError"]


class BenchError(Exception):
    """Root of the harness's own failures."""


class BenchConfigError(BenchError):
    """A profile or budget that cannot be honoured (e.g. too few operations)."""


class LoadgenError(BenchError):
    """The load generator could not be built or did not produce figures."""
