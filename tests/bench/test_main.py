"""``python -m bench``: one table on stdout, JSON on disk, failures reported."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main
from bench._errors import BenchConfigError
from bench._run import run_all


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["--profile", "smoke", "--only", "crypto", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "envelope seal_v4" in stdout
    assert "ratio" in stdout
    written = sorted(p.name for p in out.iterdir())
    assert "latest.json" in written
    assert any(n.startswith("bench-") for n in written)
    document = json.loads((out / "latest.json").read_text())
    assert document["meta"]["profile"] == "smoke"
    assert {r["scenario"] for r in document["rows"]} == {"crypto"}
    assert document["meta"]["versions"]["hypercorn"] == "0.18.0"


def test_main_refuses_unknown_scenarios(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--only", "crypto,nonsense", "--out", str(tmp_path)])
    assert info.value.code == 2


async def test_a_failing_scenario_is_reported_and_the_others_still_run(tiny, tmp_path):
    # A build directory that is a file: the http scenario cannot build its load generator.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    report = await run_all(tiny, only=["attest", "http"], build_dir=blocker / "bin")
    assert report.failed == ["http"]
    error = next(r for r in report.rows if r.scenario == "http")
    assert error.figures is None
    assert error.notes.startswith("failed: ")
    assert any(r.scenario == "attest" and r.figures is not None for r in report.rows)
    assert set(report.meta["scenario_seconds"]) == {"attest", "http"}


async def test_run_all_refuses_unknown_scenarios(tiny, tmp_path):
    with pytest.raises(BenchConfigError, match="bogus"):
        await run_all(tiny, only=["bogus"], build_dir=tmp_path)
