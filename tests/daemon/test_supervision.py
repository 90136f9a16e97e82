"""Duties are supervised: a failing duty is restarted, one failing too often stops the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from agentkeys.daemon import Daemon, FileCredentialSource
from agentkeys.daemon.errors import BrokerUnreachable, DutyFailed
from tests.daemon.conftest import make_config, policy_text, wait_until, write_private
from tests.daemon.upstream import REAL_KEY


class CrashingProbe:
    """A broker probe that crashes (a bug, not an unreachable broker) ``crashes`` times."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.calls = 0

    async def check(self) -> None:
        self.calls += 1
        if self.calls <= self.crashes:
            raise RuntimeError("probe bug")
        if self.calls > 1000:
            raise BrokerUnreachable("enough")


def _daemon(tmp_path: Path, probe: CrashingProbe) -> Daemon:
    config = make_config(tmp_path, "http://127.0.0.1:9")
    write_private(config.policy_path, policy_text("http://127.0.0.1:9"))
    assert config.credentials.file is not None
    write_private(config.credentials.file, f'[credentials]\nopenai = "{REAL_KEY}"\n')
    return Daemon(
        config=config,
        source=FileCredentialSource(config.credentials.file),
        probe=probe,
        max_failures=3,
        restart_delay=0.01,
    )


async def test_a_crashing_duty_is_restarted(nursery: trio.Nursery, tmp_path: Path) -> None:
    probe = CrashingProbe(crashes=2)
    daemon = _daemon(tmp_path, probe)
    await nursery.start(daemon.serve)
    await wait_until(daemon.liveness.reachable)
    assert probe.calls >= 3
    daemon.stop()


async def test_a_duty_failing_too_often_stops_the_daemon(tmp_path: Path) -> None:
    probe = CrashingProbe(crashes=10)
    daemon = _daemon(tmp_path, probe)
    with pytest.raises(DutyFailed) as info, trio.fail_after(20):
        await daemon.serve()
    assert "heartbeat" in info.value.reason
    assert probe.calls == 3
    assert len(daemon.cache) == 0
    assert not daemon.config.socket_path.exists()
