"""``agentkeys-migrate-s3-prefix``: eager v1 → v2 migration (SPEC.md section 9, step 11)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("agentkeys-migrate-s3-prefix: not yet built (issue 7)", file=sys.stderr)
    return 2
