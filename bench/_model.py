"""What every scenario produces: rows of figures, each with its named baseline.

A :class:`Row` is one measured case. ``ops_per_s`` and the latency percentiles are
always present (``None`` only on a "not yet" row); ``baseline`` names the row of the
same scenario it is compared with, and ``ratio`` is that comparison as a *cost*
factor: ``baseline ops/s ÷ this ops/s`` (2.0 = twice the cost per operation of the
baseline, 0.5 = half). Ratios are filled in by :func:`link_baselines` once all rows
of a scenario exist, so every ratio compares figures measured in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = ["Figures", "Row", "link_baselines", "not_yet", "percentile", "summarise"]


@dataclass(frozen=True)
class Figures:
    """Throughput and latency of one case (latencies in microseconds)."""

    ops: int
    seconds: float
    ops_per_s: float
    p50_us: float
    p90_us: float
    p99_us: float


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarise(latencies_ns: Iterable[int], *, seconds: float) -> Figures:
    """Figures from per-operation latencies (ns) measured over ``seconds`` of busy time."""
    ordered = sorted(latencies_ns)
    ops = len(ordered)
    return Figures(
        ops=ops,
        seconds=seconds,
        ops_per_s=ops / seconds if seconds > 0 else 0.0,
        p50_us=percentile(ordered, 50) / 1000.0,
        p90_us=percentile(ordered, 90) / 1000.0,
        p99_us=percentile(ordered, 99) / 1000.0,
    )


@dataclass(frozen=True)
class Row:
    """One line of the report.

    Attributes:
        scenario: the group (``crypto``, ``attest``, ``http c=8`` …).
        case: the stable identifier of this case within the scenario.
        label: what a reader sees.
        figures: the measurement; None for a case that cannot run yet.
        baseline: ``case`` of the row in the same scenario this one is compared with.
        ratio: cost relative to the baseline (see the module docstring).
        notes: short free text (sizes, errors, why a row is "not yet").
        extra: additional numbers kept in the JSON (errors, reconnects, bytes …).
    """

    scenario: str
    case: str
    label: str
    figures: Figures | None
    baseline: str | None = None
    ratio: float | None = None
    notes: str = ""
    extra: dict[str, float | int | str] = field(default_factory=dict)


def not_yet(scenario: str, case: str, label: str, why: str) -> Row:
    """A placeholder row for a case whose component has not landed."""
    return Row(scenario=scenario, case=case, label=label, figures=None, notes=f"not yet: {why}")


def link_baselines(rows: Sequence[Row]) -> list[Row]:
    """Fill in ``ratio`` for every row whose baseline row (same scenario) has figures."""
    by_key = {(r.scenario, r.case): r for r in rows}
    linked: list[Row] = []
    for row in rows:
        base = by_key.get((row.scenario, row.baseline)) if row.baseline else None
        ratio = None
        if (
            base is not None
            and base.figures is not None
            and row.figures is not None
            and row.figures.ops_per_s > 0
        ):
            ratio = base.figures.ops_per_s / row.figures.ops_per_s
        linked.append(replace(row, ratio=ratio))
    return linked
