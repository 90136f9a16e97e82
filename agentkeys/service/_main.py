"""The ``python -m agentkeys.<service> --config FILE`` entry point every service shares."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from agentkeys.config import load_config
from agentkeys.errors import DOMAIN_ERRORS

_C = TypeVar("_C")


def service_main(
    name: str,
    config_type: type[_C],
    run: Callable[[_C], Awaitable[Any]],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``--config``, build the configuration once and run the service until interrupted.

    Args:
        name: the service's name (``broker``, ``signer``, ``worker``), for usage and errors.
        config_type: the frozen configuration class :func:`agentkeys.config.load_config` builds.
        run: the service's ``run_<name>(config)`` coroutine function.
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        0 on a clean stop or Ctrl-C, 1 when the service refused to start or failed, with
        one ``agentkeys <name>: <error>: <reason>`` line on stderr (never a secret).
    """
    parser = argparse.ArgumentParser(prog=f"python -m agentkeys.{name}")
    parser.add_argument("--config", type=Path, default=None, help=f"{name} TOML file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(config_type, path=args.config)
        trio.run(partial(run, config))
    except DOMAIN_ERRORS as exc:
        print(f"agentkeys {name}: {exc.error}: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
