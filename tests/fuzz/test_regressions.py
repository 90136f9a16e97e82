"""Replay every recorded fuzzing input (tests/fuzz/regressions/<target>/<name>).

Each must keep its target's contract; where ``<name>.expect`` exists, it must be refused
with exactly that ``error`` code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeys.errors import DOMAIN_ERRORS
from tests.fuzz.targets import TARGETS, NotJson

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
VECTORS = sorted(
    path for path in REGRESSIONS.glob("*/*") if path.is_file() and path.suffix != ".expect"
)


def test_every_regression_directory_names_a_target() -> None:
    assert VECTORS, "no recorded regressions"
    assert {p.parent.name for p in VECTORS} <= set(TARGETS)


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_keeps_the_contract(path: Path) -> None:
    target = TARGETS[path.parent.name]
    data = path.read_bytes()
    target.check(data)
    expect = path.with_name(path.name + ".expect")
    if expect.exists():
        assert _refusal(path.parent.name, data) == expect.read_text().strip()


def _refusal(name: str, data: bytes) -> str | None:
    """The ``error`` code the target refuses ``data`` with, or None if it accepts it."""
    try:
        TARGETS[name].run(data)
    except NotJson:
        pytest.fail("the recorded input no longer reaches the parser")
    except DOMAIN_ERRORS as refused:
        return refused.error
    return None
