"""``python -m tests.soak --minutes 10 --clients 64``: the long soak of the daemon (make soak).

Prints one JSON summary (requests, failures, the daemon's RSS and descriptors after each
30 s slice) and exits 1 when a request failed, memory grew beyond the slack after warm-up
or descriptors leaked. Everything runs on 127.0.0.1 under a private temporary directory,
removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from tests.soak._soak import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak")
    parser.add_argument("--minutes", type=float, default=10.0, help="load time (default 10)")
    parser.add_argument("--clients", type=int, default=64, help="connections (default 64)")
    parser.add_argument("--slice", type=float, default=30.0, help="seconds per reading")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 120 or not 1 <= args.clients <= 1024:
        parser.error("--minutes must be in (0, 120] and --clients in 1..1024")
    with tempfile.TemporaryDirectory(prefix="agentkeys-soak-") as tmp:
        result = trio.run(
            partial(
                soak,
                Path(tmp) / "soak",
                seconds=args.minutes * 60,
                clients=args.clients,
                slice_seconds=args.slice,
                warmup_seconds=10.0,
            )
        )
    print(json.dumps(result.summary(), indent=2))
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
