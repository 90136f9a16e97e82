"""``python -m agentkeys.signer --config FILE``: run the signer until interrupted."""

from __future__ import annotations

import sys

from agentkeys.service import service_main
from agentkeys.signer._run import run_signer
from agentkeys.signer.config import SignerConfig

if __name__ == "__main__":
    sys.exit(service_main("signer", SignerConfig, run_signer))
