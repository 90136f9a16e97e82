"""Our services as child processes: ``python -m agentkeys.<svc> --config FILE``.

:func:`config_toml` writes a frozen service config (``agentkeys.broker.config.BrokerConfig``
and the like) as the TOML file its ``--config`` loads; :class:`Child` runs one service on a
fixed port from such a file, can be SIGKILLed and started again with the same config and
state, and stops with SIGTERM (SIGKILL after a grace period). Used by the broker replica
scenario and by the fault, soak and replica tests.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

__all__ = [
    "START_TIMEOUT",
    "Child",
    "config_toml",
    "cpu_seconds",
    "stop_process",
    "wait_listening",
]

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
_STOP_GRACE = 5.0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, enum.Enum):
        return _toml_value(value.value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def config_toml(config: Any) -> str:
    """TOML text of a frozen config (sections are dataclass fields; None is left out)."""
    lines: list[str] = []

    def section(obj: Any, trail: tuple[str, ...]) -> None:
        scalars, subs = [], []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                subs.append((f.name, value))
            elif value is not None:
                scalars.append(f"{f.name} = {_toml_value(value)}")
        if trail and scalars:
            lines.append(f"[{'.'.join(trail)}]")
        lines.extend(scalars)
        if scalars:
            lines.append("")
        for name, value in subs:
            section(value, (*trail, name))

    section(config, ())
    return "\n".join(lines)


async def wait_listening(port: int) -> None:
    """Until 127.0.0.1:``port`` accepts a connection (at most :data:`START_TIMEOUT` s)."""
    with trio.fail_after(START_TIMEOUT):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def stop_process(process: trio.Process | None) -> None:
    """SIGTERM ``process`` (if running), then SIGKILL after a grace period; wait for it."""
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(_STOP_GRACE):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@dataclass
class Child:
    """One of our services as ``python -m agentkeys.<module> --config FILE`` on a fixed port."""

    name: str
    module: str
    config: Path
    port: int
    log: Path
    process: trio.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start it (again) with the same config, port and state; return once it listens."""
        self.starts += 1
        with self.log.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", self.module, "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
                start_new_session=True,
            )
        try:
            await wait_listening(self.port)
        except trio.TooSlowError:
            raise RuntimeError(f"{self.name} did not listen:\n{self.log_tail()}") from None

    async def kill(self) -> int:
        """SIGKILL it and wait until it is gone; its return code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        code = await self.process.wait()
        self.process = None
        return code

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        process, self.process = self.process, None
        await stop_process(process)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
