"""One atheris (libFuzzer) harness over one target of tests/fuzz/targets.py.

Run by ``python -m tests.fuzz``; by hand::

    .venv/bin/python -m tests.fuzz._atheris siwe -max_total_time=30 CORPUS_DIR

Only agentkeys and attest are instrumented for coverage. A crash (any exception outside the
target's declared leaves) is written by libFuzzer to ``-artifact_prefix`` (the runner points
it at tests/fuzz/regressions/<target>/) and ends the run with a non-zero status.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore  # no stubs; installed only for `make fuzz`

with atheris.instrument_imports(include=["agentkeys", "attest"]):
    from tests.fuzz.targets import TARGETS


def main(argv: list[str]) -> None:
    """``argv[1]`` names the target; the rest are libFuzzer options and corpus dirs."""
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
