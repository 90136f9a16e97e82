"""The short soak in ``make test``: 64 clients on the daemon for 9 s in three 3 s slices
(after a 2 s warm-up).

The 10-minute run is ``make soak`` (``python -m tests.soak --minutes 10 --clients 64``);
see tests/soak/_soak.py for what is driven and measured.
"""

from __future__ import annotations

from pathlib import Path

from tests.soak._soak import soak


async def test_daemon_64_clients_no_errors_flat_memory_no_fd_growth(tmp_path: Path) -> None:
    result = await soak(
        tmp_path / "soak", seconds=9.0, clients=64, slice_seconds=3.0, warmup_seconds=2.0
    )
    print(result.summary())
    assert result.requests > 0
    assert result.problems() == []
