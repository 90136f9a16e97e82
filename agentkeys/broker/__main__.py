"""``python -m agentkeys.broker --config FILE``: run the broker until interrupted."""

from __future__ import annotations

import sys

from agentkeys.broker._run import run_broker
from agentkeys.broker.config import BrokerConfig
from agentkeys.service import service_main

if __name__ == "__main__":
    sys.exit(service_main("broker", BrokerConfig, run_broker))
