"""TPM wire parsers: every truncation or alteration raises a domain error, never struct/Index."""

from __future__ import annotations

import os

import pytest

from agentkeys.devstack import Swtpm
from attest import AttestationMalformed, AttestationRefused
from attest.quote import encode_pcr_selection, parse_attest, pcr_digest, verify_certify
from attest.tpm import Tpm, TpmDeviceKey
from attest.tpm_public import parse_tpm_public


async def test_parsers_reject_every_truncation_and_trailing_bytes(swtpm: Swtpm) -> None:
    tpm = await Tpm.connect(swtpm.tcti)
    try:
        key = await TpmDeviceKey.open(tpm)
        nonce = os.urandom(32)
        evidence = await key.tpm_evidence(nonce, pcrs=(0, 16))
    finally:
        await tpm.aclose()
    quote = parse_attest(evidence.quote_attest)
    assert quote.extra_data == nonce
    assert quote.pcr_selection == (0, 16)
    assert quote.pcr_digest == pcr_digest([b"\0" * 32, b"\0" * 32])
    certify = parse_attest(evidence.certify_attest)
    assert certify.certified_name == parse_tpm_public(evidence.k10_public).name

    for blob, parse in (
        (evidence.quote_attest, parse_attest),
        (evidence.certify_attest, parse_attest),
        (evidence.k10_public, parse_tpm_public),
        (evidence.ak_public, parse_tpm_public),
    ):
        for cut in range(len(blob)):
            with pytest.raises(AttestationMalformed):
                parse(blob[:cut])
        with pytest.raises(AttestationMalformed):
            parse(blob + b"\0")

    # Certifying with the (unrestricted) K10 as "AK" is refused: it could sign anything.
    k10 = parse_tpm_public(evidence.k10_public)
    with pytest.raises(AttestationRefused, match="restricted"):
        verify_certify(
            evidence.certify_attest,
            evidence.certify_signature,
            ak=k10,
            certified=k10,
            expected_nonce=nonce,
        )


def test_bad_magic_and_pcr_range() -> None:
    with pytest.raises(AttestationMalformed, match="magic"):
        parse_attest(b"\x00" * 64)
    with pytest.raises(AttestationMalformed):
        encode_pcr_selection([24])
