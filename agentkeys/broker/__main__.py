"""The broker's commands (docs/broker.md).

``python -m agentkeys.broker --config FILE``: run the broker until interrupted.

``python -m agentkeys.broker rotate-key --config FILE --purpose cap|oidc|session``: add the
next key of a purpose. With the shared key set (``[keys] source = store``) it is published
by every replica at once and signs after ``[keys] publish_lead``; with key files it signs
after the broker's next start. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import trio

from agentkeys.broker._keys import PURPOSES, BrokerKeys
from agentkeys.broker._run import open_keys, open_state_store, run_broker
from agentkeys.broker.config import BrokerConfig
from agentkeys.config import load_config
from agentkeys.errors import DOMAIN_ERRORS
from agentkeys.service import service_main


async def rotate_key(config: BrokerConfig, purpose: str) -> dict[str, object]:
    """Rotate ``purpose``'s key as configured; what was stored (module docstring)."""
    if not config.keys_in_store:
        await trio.to_thread.run_sync(BrokerKeys.rotate, config.state.dir, purpose)
        return {"purpose": purpose, "source": "files", "signs": "after the next start"}
    store = await open_state_store(config)
    try:
        _, shared = await open_keys(config, store)
        assert shared is not None
        return {"source": "store", **asdict(await shared.rotate(purpose))}
    finally:
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``rotate-key``; anything else runs the broker (``service_main``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "rotate-key":
        return service_main("broker", BrokerConfig, run_broker, args)
    parser = argparse.ArgumentParser(prog="python -m agentkeys.broker rotate-key")
    parser.add_argument("--config", type=Path, default=None, help="broker TOML file")
    parser.add_argument("--purpose", choices=PURPOSES, required=True)
    options = parser.parse_args(args[1:])
    try:
        config = load_config(BrokerConfig, path=options.config)
        print(json.dumps(trio.run(rotate_key, config, options.purpose), sort_keys=True))
    except DOMAIN_ERRORS as exc:
        print(f"agentkeys broker: {exc.error}: {exc.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
