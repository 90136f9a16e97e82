"""``python -m bench``: run every scenario, print one table, write JSON under bench/results/.

Usage::

    python -m bench                       # full profile (what `make bench` runs)
    python -m bench --profile smoke       # seconds, for checking the harness
    python -m bench --only crypto,http    # a subset
    python -m bench --out /tmp/results    # somewhere else

Exit status 1 when a scenario failed (its row says why); figures of the others are
still printed and written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench._profile import PROFILES
from bench._report import format_table, to_document, write_document
from bench._run import SCENARIOS, run_sync

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON")
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="where the C load generator is compiled (default OUT/bin)",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    build_dir = args.build_dir or args.out / "bin"

    def progress(name: str) -> None:
        print(f"bench: running {name} …", file=sys.stderr, flush=True)

    report = run_sync(PROFILES[args.profile], only=only, build_dir=build_dir, progress=progress)
    print(format_table(report.rows, report.meta))
    stamp = report.meta["started_at"].replace("-", "").replace(":", "")
    path = write_document(to_document(report.rows, report.meta), args.out, stamp)
    print(f"\nwrote {path}")
    if report.failed:
        print(f"bench: failed scenarios: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
