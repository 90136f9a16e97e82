"""``python -m agentkeys.signer --config FILE``: run the signer until interrupted."""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

import trio

from agentkeys.config import load_config
from agentkeys.errors import AgentkeysError
from agentkeys.signer._run import run_signer
from agentkeys.signer.config import SignerConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentkeys.signer")
    parser.add_argument("--config", type=Path, default=None, help="signer TOML file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(SignerConfig, path=args.config)
        trio.run(partial(run_signer, config))
    except AgentkeysError as exc:
        print(f"agentkeys signer: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
