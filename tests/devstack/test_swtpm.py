"""swtpm launcher: a real TPM2_GetRandom through tpm2-pytss ESAPI, and state reuse."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from tpm2_pytss import ESAPI, TPM2B_AUTH, TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV

import agentkeys.devstack.swtpm as swtpm_module
from agentkeys.devstack import Swtpm, start_swtpm
from agentkeys.devstack import pick_port as devstack_pick_port

NV_INDEX = 0x01500017
_LIMITER = trio.CapacityLimiter(1)


def _get_random(tcti: str, count: int) -> bytes:
    with ESAPI(tcti) as esapi:
        return bytes(esapi.get_random(count))


def _define_and_write_nv(tcti: str, data: bytes) -> None:
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=NV_INDEX,
            nameAlg=TPM2_ALG.SHA256,
            attributes=TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD,
            dataSize=len(data),
        )
    )
    with ESAPI(tcti) as esapi:
        handle = esapi.nv_define_space(TPM2B_AUTH(), public)
        esapi.nv_write(handle, data, auth_handle=ESYS_TR.OWNER)


def _read_nv(tcti: str, size: int) -> bytes:
    with ESAPI(tcti) as esapi:
        handle = esapi.tr_from_tpmpublic(NV_INDEX)
        return bytes(esapi.nv_read(handle, size, auth_handle=ESYS_TR.OWNER))


async def test_get_random_through_esapi(swtpm: Swtpm) -> None:
    assert swtpm.tcti == f"swtpm:host=127.0.0.1,port={swtpm.port}"
    assert swtpm.ctrl_port == swtpm.port + 1
    first = await trio.to_thread.run_sync(_get_random, swtpm.tcti, 16, limiter=_LIMITER)
    second = await trio.to_thread.run_sync(_get_random, swtpm.tcti, 16, limiter=_LIMITER)
    assert len(first) == len(second) == 16
    assert first != second


async def test_restart_with_the_same_state_dir_keeps_nv_data(tmp_path: Path) -> None:
    state = tmp_path / "tpm-state"
    secret = b"kept across restarts"
    async with start_swtpm(tpm_state_dir=state, run_dir=tmp_path / "run1") as tpm:
        await trio.to_thread.run_sync(_define_and_write_nv, tpm.tcti, secret, limiter=_LIMITER)
    async with start_swtpm(tpm_state_dir=state, run_dir=tmp_path / "run2") as tpm:
        assert tpm.tpm_state_dir == state
        kept = await trio.to_thread.run_sync(_read_nv, tpm.tcti, len(secret), limiter=_LIMITER)
    assert kept == secret
    async with start_swtpm(run_dir=tmp_path / "fresh") as fresh:
        assert fresh.tpm_state_dir != state
        with pytest.raises(TSS2_Exception):
            await trio.to_thread.run_sync(_read_nv, fresh.tcti, len(secret), limiter=_LIMITER)


async def test_a_lost_port_race_is_retried_with_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first pick returns a port someone else already listens on, as if
    # another process had taken it between the probe and swtpm's bind.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken])
        real_pick = devstack_pick_port

        def pick_port(**kwargs: Any) -> int:
            return next(picks, None) or real_pick(**kwargs)

        monkeypatch.setattr(swtpm_module, "pick_port", pick_port)
        async with start_swtpm(run_dir=tmp_path) as tpm:
            assert tpm.port != taken
            random = await trio.to_thread.run_sync(_get_random, tpm.tcti, 8, limiter=_LIMITER)
        assert len(random) == 8
        assert "address already in use" in tpm.log_path.read_text().lower()
