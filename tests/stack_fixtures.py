"""Fixtures that start real components (filled in by the launcher work)."""
