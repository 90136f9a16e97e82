"""Shape checks shared by the scenario tests: figures present and well formed, no timing."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench._model import Row, link_baselines


def assert_well_formed(rows: Sequence[Row], *, expect_not_yet: bool = False) -> list[Row]:
    """Every measured row has positive, ordered, finite figures; baselines resolve.

    A row without figures is either a memory reading (``extra["rss_kib"]``) or, when
    ``expect_not_yet``, a "not yet" placeholder.

    Returns the rows with ratios linked (the runner's view).
    """
    assert rows, "a scenario must produce rows"
    keys = [(r.scenario, r.case) for r in rows]
    assert len(keys) == len(set(keys)), "case names must be unique within a scenario"
    linked = link_baselines(rows)
    for row in linked:
        assert row.label
        assert row.case
        assert row.scenario
        if row.figures is None and "rss_kib" in row.extra:
            rss = row.extra["rss_kib"]
            assert isinstance(rss, int), row
            assert rss > 0, row  # a memory reading, not a throughput figure
            continue
        if row.figures is None:
            assert expect_not_yet, f"{row.scenario}/{row.case} has no figures"
            # a placeholder, or a peer this run could not measure ("LiteLLM skipped: …")
            assert row.notes.startswith("not yet: ") or " skipped: " in row.notes, row
            continue
        f = row.figures
        values = (f.ops_per_s, f.p50_us, f.p90_us, f.p99_us, f.seconds)
        assert all(math.isfinite(v) for v in values), row
        assert f.ops > 0, row
        assert f.ops_per_s > 0, row
        assert f.seconds > 0, row
        assert 0 < f.p50_us <= f.p90_us <= f.p99_us, row
        if row.baseline is not None:
            assert (row.scenario, row.baseline) in keys, f"{row.case}: unknown baseline"
            assert row.ratio is not None, row
            assert row.ratio > 0, row
    return linked
