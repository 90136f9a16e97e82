"""Scenario ``cli``: start-up of the ``agentkeys`` command line, one process per run.

Each run is ``python -m agentkeys.cli --version`` (or ``--help``) in a fresh interpreter,
timed from spawn to exit; the baseline is ``python -c pass``, the interpreter alone, so the
ratio is what importing the CLI costs. The notes give the figure before lazy imports
(issue 16: 2.2 s at HEAD ff8fe1e, ``--version`` included); the target is under 0.3 s.
"""

from __future__ import annotations

import subprocess
import sys
import time

import trio

from bench._model import Row, summarise
from bench._profile import Profile

__all__ = ["BEFORE_S", "run"]

SCENARIO = "cli"
BEFORE_S = 2.2  # every call before lazy imports (issue 16)


def _spawn(argv: list[str]) -> int:
    """Wall time (ns) of one process."""
    start = time.perf_counter_ns()
    subprocess.run(
        [sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter_ns() - start


async def run(profile: Profile) -> list[Row]:
    """Rows for the interpreter alone, ``--version`` and ``--help``."""
    cases = (
        ("python", "python -c pass (interpreter start)", ["-c", "pass"], None, ""),
        (
            "version",
            "agentkeys --version",
            ["-m", "agentkeys.cli", "--version"],
            "python",
            f"before: {BEFORE_S} s; target < 0.3 s",
        ),
        (
            "help",
            "agentkeys --help",
            ["-m", "agentkeys.cli", "--help"],
            "python",
            f"before: {BEFORE_S} s; target < 0.3 s",
        ),
    )
    rows = []
    for case, label, argv, baseline, notes in cases:
        await trio.to_thread.run_sync(_spawn, argv)  # warm the page cache
        times = [await trio.to_thread.run_sync(_spawn, argv) for _ in range(profile.cli_runs)]
        figures = summarise(times, seconds=sum(times) / 1e9)
        rows.append(Row(SCENARIO, case, label, figures, baseline=baseline, notes=notes))
    return rows
