"""``python -m agentkeys.broker --config FILE``: run the broker until interrupted."""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

import trio

from agentkeys.broker._run import run_broker
from agentkeys.broker.config import BrokerConfig
from agentkeys.config import load_config
from agentkeys.errors import AgentkeysError


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config``, build the configuration once and serve."""
    parser = argparse.ArgumentParser(prog="python -m agentkeys.broker")
    parser.add_argument("--config", type=Path, default=None, help="broker TOML file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(BrokerConfig, path=args.config)
        trio.run(partial(run_broker, config))
    except AgentkeysError as exc:
        print(f"agentkeys broker: {exc.error}: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
