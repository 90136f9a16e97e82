"""Duties are supervised: a failing duty is restarted, one failing too often stops the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys._files import write_private
from agentkeys.daemon import BrokerWorkerSource, Daemon
from agentkeys.daemon.errors import BrokerUnreachable, DutyFailed
from agentkeys.daemon.session import DeviceSession
from attest.device_key import SoftwareDeviceKey
from tests.daemon.conftest import (
    ACTOR,
    OPERATOR,
    UNREACHABLE,
    make_config,
    policy_text,
    wait_until,
)


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


@asynccontextmanager
async def _daemon(tmp_path: Path, probe: CrashingProbe) -> AsyncIterator[Daemon]:
    """The daemon with its real source; no request is made, so no broker is reached."""
    config = make_config(tmp_path, UNREACHABLE)
    write_private(config.policy_path, policy_text(UNREACHABLE))
    async with httpx.AsyncClient(base_url=UNREACHABLE, trust_env=False) as http:
        key = SoftwareDeviceKey.open(tmp_path / "device" / "k10.pem")
        source = BrokerWorkerSource(
            broker=http, worker=http, device_key=key,
            session=DeviceSession(broker=http, device_key=key), operator_omni=OPERATOR,
            actor_omni=ACTOR,
        )  # fmt: skip
        yield Daemon(config=config, source=source, probe=probe, max_failures=3, restart_delay=0.01)


async def test_a_crashing_duty_is_restarted(nursery: trio.Nursery, tmp_path: Path) -> None:
    probe = CrashingProbe(crashes=2)
    async with _daemon(tmp_path, probe) as daemon:
        await nursery.start(daemon.serve)
        await wait_until(daemon.liveness.reachable)
        assert probe.calls >= 3
        daemon.stop()


async def test_a_duty_failing_too_often_stops_the_daemon(tmp_path: Path) -> None:
    probe = CrashingProbe(crashes=10)
    async with _daemon(tmp_path, probe) as daemon:
        with pytest.raises(DutyFailed) as info, trio.fail_after(20):
            await daemon.serve()
    assert "heartbeat" in info.value.reason
    assert probe.calls == 3
    assert len(daemon.cache) == 0
    assert not daemon.config.socket_path.exists()
