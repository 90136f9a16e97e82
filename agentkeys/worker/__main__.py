"""``python -m agentkeys.worker --config FILE``: run the worker microservice until interrupted."""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

import trio

from agentkeys.config import load_config
from agentkeys.errors import AgentkeysError
from agentkeys.worker._run import run_worker
from agentkeys.worker.config import WorkerConfig


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config``, build the configuration once and serve."""
    parser = argparse.ArgumentParser(prog="python -m agentkeys.worker")
    parser.add_argument("--config", type=Path, default=None, help="worker TOML file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(WorkerConfig, path=args.config)
        trio.run(partial(run_worker, config))
    except AgentkeysError as exc:
        print(f"agentkeys worker: {exc.error}: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
