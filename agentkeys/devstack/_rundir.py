"""The run directory a launcher writes its logs, configs and default state into."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def run_directory(run_dir: Path | None, prefix: str) -> Iterator[Path]:
    """Yield ``run_dir`` (created 0700 if missing, kept afterwards) or a temporary one.

    A temporary directory is removed when the block ends, logs included; pass
    ``run_dir`` to keep them.
    """
    if run_dir is not None:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        yield run_dir
        return
    path = Path(tempfile.mkdtemp(prefix=f"agentkeys-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
