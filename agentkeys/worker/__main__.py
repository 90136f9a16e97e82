"""``python -m agentkeys.worker --config FILE``: run the worker until interrupted."""

from __future__ import annotations

import sys

from agentkeys.service import service_main
from agentkeys.worker._run import run_worker
from agentkeys.worker.config import WorkerConfig

if __name__ == "__main__":
    sys.exit(service_main("worker", WorkerConfig, run_worker))
