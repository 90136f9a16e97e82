"""The report model: percentiles, summaries, baseline ratios and the table."""

from __future__ import annotations

import json

import pytest

from bench._model import Figures, Row, link_baselines, not_yet, percentile, summarise
from bench._report import format_table, to_document, write_document


def _figures(ops_per_s: float) -> Figures:
    return Figures(ops=10, seconds=1.0, ops_per_s=ops_per_s, p50_us=1.0, p90_us=2.0, p99_us=3.0)


@pytest.mark.parametrize(
    ("pct", "expected"), [(50, 50.0), (90, 90.0), (99, 99.0), (100, 100.0), (0.1, 1.0)]
)
def test_percentile_is_nearest_rank(pct, expected):
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, pct) == expected


def test_percentile_of_nothing_is_zero():
    assert percentile([], 50) == 0.0


def test_summarise_converts_ns_to_us_and_rate():
    figures = summarise([3000, 1000, 2000, 4000], seconds=0.5)
    assert figures.ops == 4
    assert figures.ops_per_s == 8.0
    assert (figures.p50_us, figures.p90_us, figures.p99_us) == (2.0, 4.0, 4.0)


def test_summarise_with_no_time_reports_zero_rate():
    assert summarise([], seconds=0.0).ops_per_s == 0.0


def test_link_baselines_is_cost_relative_to_the_named_row():
    rows = link_baselines(
        [
            Row("s", "base", "base", _figures(1000.0)),
            Row("s", "slow", "slow", _figures(250.0), baseline="base"),
            Row("other", "slow", "same case, other scenario", _figures(10.0), baseline="nope"),
        ]
    )
    assert rows[0].ratio is None
    assert rows[1].ratio == 4.0
    assert rows[2].ratio is None  # a missing baseline never borrows another scenario's row


def test_link_baselines_skips_rows_without_figures():
    rows = link_baselines(
        [
            not_yet("s", "base", "base", "component missing"),
            Row("s", "x", "x", _figures(5.0), baseline="base"),
            Row("s", "y", "y", _figures(0.0), baseline="x"),
        ]
    )
    assert [r.ratio for r in rows] == [None, None, None]
    assert rows[0].notes == "not yet: component missing"


def test_table_has_one_line_per_row_and_marks_missing_figures():
    rows = link_baselines(
        [
            Row("crypto", "a", "label-a", _figures(2_000_000.0)),
            Row("crypto", "b", "label-b", _figures(1_000_000.0), baseline="a"),
            not_yet("memory", "rss", "label-rss", "needs a daemon"),
        ]
    )
    text = format_table(rows, {"profile": "smoke", "duration_s": 1.0})
    lines = text.splitlines()
    assert "ratio" in lines[3]
    assert "p99" in lines[3]
    body = lines[5:]
    assert len(body) == 3
    assert "label-b" in body[1]
    assert "×2.00" in body[1]
    assert "2,000,000" in body[0]
    assert "—" in body[2]
    assert "not yet: needs a daemon" in body[2]


def test_document_round_trips_as_json(tmp_path):
    rows = [Row("s", "a", "a", _figures(3.0)), not_yet("s", "b", "b", "later")]
    document = to_document(rows, {"profile": "smoke"})
    path = write_document(document, tmp_path / "out", "20260101T000000Z")
    assert path.name == "bench-20260101T000000Z.json"
    loaded = json.loads(path.read_text())
    assert loaded == json.loads((tmp_path / "out" / "latest.json").read_text())
    assert loaded["rows"][0]["figures"]["ops_per_s"] == 3.0
    assert loaded["rows"][1]["figures"] is None


def test_a_ratio_far_below_one_is_shown_as_a_fraction():
    rows = link_baselines(
        [
            Row("chain", "rpc", "label-rpc", _figures(1_000.0)),
            Row("chain", "hit", "label-hit", _figures(1_240_000.0), baseline="rpc"),
        ]
    )
    body = format_table(rows, {"profile": "smoke", "duration_s": 1.0}).splitlines()[5:]
    assert "×1/1,240" in body[1]
