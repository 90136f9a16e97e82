"""swtpm, the software TPM 2.0 used in development and tests (SPEC section 10).

``start_swtpm`` runs ``swtpm socket --tpm2`` with its command port P and
control port P+1 on 127.0.0.1 and yields a ``Swtpm`` once both ports accept
and a raw ``TPM2_GetRandom`` succeeds. Clients connect with the TCTI string
``swtpm:host=127.0.0.1,port=P`` (tpm2-tss' swtpm TCTI).

The TPM state lives in a directory: pass ``tpm_state_dir`` to keep it across
runs (restart with the same state), or leave it None for a fresh TPM.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from agentkeys.devstack._binaries import swtpm_binary
from agentkeys.devstack._ports import LOOPBACK, pick_port
from agentkeys.devstack._process import LaunchPlan, launch
from agentkeys.devstack._rundir import run_directory

_GRACE = 5.0
_ATTEMPTS = 3
_IO_TIMEOUT = 2.0

# TPM2_GetRandom(8): tag TPM_ST_NO_SESSIONS, size 12, command code 0x17B.
_TPM_ST_NO_SESSIONS = 0x8001
_TPM_CC_GET_RANDOM = 0x0000017B
_GET_RANDOM = struct.pack(">HIIH", _TPM_ST_NO_SESSIONS, 12, _TPM_CC_GET_RANDOM, 8)
_RESPONSE_HEADER = struct.Struct(">HII")
# swtpm control channel: CMD_GET_CAPABILITY = 1, answered by result u32 + caps u32.
_CTRL_GET_CAPABILITY = struct.pack(">I", 1)


@dataclass(frozen=True)
class Swtpm:
    """A running swtpm.

    Attributes:
        tcti: TCTI configuration for tpm2-tss, ``swtpm:host=127.0.0.1,port=P``.
        port: the TPM command port P.
        ctrl_port: the swtpm control port, P + 1.
        tpm_state_dir: the TPM state directory (reuse it to restart with the same state).
        log_path: swtpm's log.
    """

    tcti: str
    port: int
    ctrl_port: int
    tpm_state_dir: Path
    log_path: Path
    _process: trio.Process = field(repr=False, compare=False)

    @property
    def pid(self) -> int:
        """Process id of the launched program (the leader of its process group)."""
        return self._process.pid


async def _receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


async def _tpm_answers(port: int) -> bool:
    """Whether the control port answers GET_CAPABILITY and the TPM runs GetRandom."""
    try:
        with trio.fail_after(_IO_TIMEOUT):
            ctrl = await trio.open_tcp_stream(LOOPBACK, port + 1)
            async with ctrl:
                await ctrl.send_all(_CTRL_GET_CAPABILITY)
                (result,) = struct.unpack(">I", (await _receive_exactly(ctrl, 8))[:4])
            if result != 0:
                return False
            stream = await trio.open_tcp_stream(LOOPBACK, port)
            async with stream:
                await stream.send_all(_GET_RANDOM)
                header = await _receive_exactly(stream, _RESPONSE_HEADER.size)
                tag, size, code = _RESPONSE_HEADER.unpack(header)
                if size >= _RESPONSE_HEADER.size:
                    await _receive_exactly(stream, size - _RESPONSE_HEADER.size)
    except (OSError, EOFError, trio.TooSlowError, trio.BrokenResourceError):
        return False
    return bool(tag == _TPM_ST_NO_SESSIONS and code == 0)


@asynccontextmanager
async def start_swtpm(
    *,
    tpm_state_dir: Path | None = None,
    run_dir: Path | None = None,
    startup_timeout: float = 10.0,
) -> AsyncIterator[Swtpm]:
    """Run swtpm until the block ends; it is stopped however the block is left.

    Args:
        tpm_state_dir: TPM state directory, created (0700) if missing and reused
            if present; None gives a fresh TPM in ``<run_dir>/tpm-state``.
        run_dir: where ``swtpm.log`` (and the default state) go; None uses a
            temporary directory removed afterwards.
        startup_timeout: seconds to wait for the TPM to answer.

    Raises:
        BinaryNotFound: swtpm is not installed.
        ComponentStartFailed: swtpm exited or did not answer in time (with log tail).
    """
    binary = swtpm_binary()
    with run_directory(run_dir, "swtpm") as directory:
        state = tpm_state_dir if tpm_state_dir is not None else directory / "tpm-state"
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path = directory / "swtpm.log"

        def plan() -> LaunchPlan[int]:
            port = pick_port(offsets=(0, 1))
            argv = (
                str(binary), "socket", "--tpm2",
                "--server", f"type=tcp,port={port},bindaddr={LOOPBACK}",
                "--ctrl", f"type=tcp,port={port + 1},bindaddr={LOOPBACK}",
                "--tpmstate", f"dir={state}",
                "--flags", "not-need-init,startup-clear",
            )  # fmt: skip
            return LaunchPlan(ports=port, argv=argv)

        async with launch(
            "swtpm",
            plan=plan,
            ready=_tpm_answers,
            log_path=log_path,
            startup_timeout=startup_timeout,
            grace=_GRACE,
            attempts=_ATTEMPTS,
        ) as (port, process):
            yield Swtpm(
                tcti=f"swtpm:host={LOOPBACK},port={port}",
                port=port,
                ctrl_port=port + 1,
                tpm_state_dir=state,
                log_path=log_path,
                _process=process,
            )
