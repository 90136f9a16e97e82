"""The one table a run prints, and the JSON document it writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench._model import Row

__all__ = ["format_table", "to_document", "write_document"]

_HEADER = ("scenario", "case", "ops/s", "p50", "p90", "p99", "ratio", "vs baseline", "notes")


def _latency(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    if us >= 100:
        return f"{us:.0f} µs"
    return f"{us:.1f} µs"


def _rate(ops_per_s: float) -> str:
    return f"{ops_per_s:,.0f}" if ops_per_s >= 100 else f"{ops_per_s:,.1f}"


def _ratio(ratio: float) -> str:
    """``×1.32``; far below 1 as a fraction (``×1/1,240``), which two decimals would hide."""
    if ratio >= 0.01 or ratio <= 0:
        return f"×{ratio:.2f}"
    return f"×1/{1 / ratio:,.0f}"


def _cells(row: Row) -> tuple[str, ...]:
    f = row.figures
    if f is None:
        figures = ("—", "—", "—", "—")
    else:
        figures = (_rate(f.ops_per_s), _latency(f.p50_us), _latency(f.p90_us), _latency(f.p99_us))
    ratio = _ratio(row.ratio) if row.ratio is not None else ""
    baseline = row.baseline or ""
    return (row.scenario, row.label, *figures, ratio, baseline, row.notes)


def format_table(rows: Sequence[Row], meta: Mapping[str, Any]) -> str:
    """The report: a header line about the run, then one line per row.

    ``ratio`` is the cost per operation relative to the row named in ``vs baseline``
    (baseline ops/s ÷ this row's ops/s), both measured in this run.
    """
    cells = [_HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER) - 1)]
    right = {2, 3, 4, 5, 6}
    lines = []
    for index, line in enumerate(cells):
        parts = [
            line[i].rjust(widths[i]) if i in right else line[i].ljust(widths[i])
            for i in range(len(widths))
        ]
        lines.append("  ".join([*parts, line[-1]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -----")
    load = meta.get("loadavg_before")
    head = (
        f"agentkeys bench ({meta.get('profile')}) {meta.get('started_at')}  "
        f"git {str(meta.get('git_commit') or '?')[:12]}  cpus {meta.get('cpus')}  "
        f"load {load}  {meta.get('duration_s', 0):.0f} s"
    )
    legend = "ratio = cost per op vs the baseline row (baseline ops/s ÷ this ops/s), same run"
    return "\n".join([head, legend, "", *lines])


def to_document(rows: Sequence[Row], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document: ``{"meta": {...}, "rows": [...]}`` (figures may be null)."""
    return {"meta": dict(meta), "rows": [asdict(r) for r in rows]}


def write_document(document: Mapping[str, Any], out_dir: Path, stamp: str) -> Path:
    """Write ``bench-<stamp>.json`` and ``latest.json`` under ``out_dir``; return the first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path
