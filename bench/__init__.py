"""agentkeys benchmarks: the measured cost of every hot path against its baseline.

``python -m bench`` (``make bench``) runs every scenario under the ``full``
profile, prints one table and writes JSON under ``bench/results/`` (gitignored).
docs/performance.md explains the scenarios, the targets and the latest figures.

Scenarios (each a module with ``async def run(profile, …) -> list[Row]``):

* :mod:`bench.crypto` — envelopes, caps, K10 PoP vs raw ``cryptography`` calls;
* :mod:`bench.attestation` — E1 caller attestation per connection vs a plain accept;
* :mod:`bench.http` — raw Trio floor, Hypercorn + ASGI, Hypercorn + Quart-Trio and
  ``agentkeys.http1.serve_attested`` on Unix sockets, driven by a C load generator
  (``bench/loadgen.c``) at 1, 8 and 64 concurrent clients;
* :mod:`bench.chain` — ChainClient reads against a real anvil, and the broker's
  cached chain view;
* :mod:`bench.broker` — cap minting over HTTP, chain view following vs not;
* :mod:`bench.worker` — credential fetch/store ("not yet": needs the dev stack);
* :mod:`bench.daemon` — policy-rule scaling, the sidecar's added latency and
  throughput (the real daemon in its own process), and its memory.

Rules every scenario keeps: bounded counts and durations (:mod:`bench._profile`),
loopback and Unix sockets only, everything started is stopped, and a baseline
measured side by side in the same run for every ratio.
"""

from bench._errors import BenchConfigError, BenchError, LoadgenError
from bench._model import Figures, Row
from bench._profile import FULL, PROFILES, SMOKE, Profile

__all__ = [
    "FULL",
    "PROFILES",
    "SMOKE",
    "BenchConfigError",
    "BenchError",
    "Figures",
    "LoadgenError",
    "Profile",
    "Row",
]
