"""The interleaved micro-benchmark runner: budgets are honoured exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench._errors import BenchConfigError
from bench._micro import MicroBudget, measure_interleaved


@pytest.mark.parametrize(("max_ops", "rounds"), [(30, 2), (31, 3), (7, 3), (1000, 5)])
def test_a_case_never_runs_more_than_max_ops(max_ops, rounds):
    # Long enough that only the operation cap can end a round.
    budget = MicroBudget(seconds=60.0, rounds=rounds, max_ops=max_ops)
    calls = {"a": 0, "b": 0}

    def op(name: str) -> Callable[[], None]:
        def run() -> None:
            calls[name] += 1

        return run

    figures = measure_interleaved([("a", op("a")), ("b", op("b"))], budget)
    assert calls["a"] <= max_ops
    assert calls["a"] == calls["b"]
    assert figures["a"].ops == budget.ops_per_round * rounds
    assert calls["a"] == figures["a"].ops + budget.warmup_ops


def test_cases_take_turns_round_by_round():
    order: list[str] = []
    budget = MicroBudget(seconds=60.0, rounds=3, max_ops=6)
    measure_interleaved(
        [("x", lambda: order.append("x")), ("y", lambda: order.append("y"))], budget
    )
    assert order == ["x", "x", "y", "y"] * 3


@pytest.mark.parametrize(
    ("seconds", "rounds", "max_ops"), [(0.0, 1, 10), (1.0, 0, 10), (1.0, 5, 9), (-1.0, 1, 10)]
)
def test_impossible_budgets_are_refused(seconds, rounds, max_ops):
    with pytest.raises(BenchConfigError):
        MicroBudget(seconds=seconds, rounds=rounds, max_ops=max_ops)
