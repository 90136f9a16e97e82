"""E3 caller pins: TPM quotes from a real swtpm, and the software P-256 fallback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.devstack import Swtpm, start_swtpm
from attest import (
    AttestationMalformed,
    AttestationRefused,
    CallerPin,
    NonceMismatch,
    PcrMismatch,
    PinAnswer,
    PinKind,
    SignatureInvalid,
    new_challenge,
    software_answer,
    software_pin,
    verify_pin_answer,
)
from attest.tpm import Tpm, tpm_enroll_pin, tpm_pin_answer

PCRS = (16, 23)  # resettable debug PCRs: the test can change them


async def test_tpm_quote_pin(swtpm: Swtpm, tmp_path: Path) -> None:
    tpm = await Tpm.connect(swtpm.tcti)
    try:
        pin = CallerPin.from_json(CallerPin.to_json(await tpm_enroll_pin(tpm, "worker-tee", PCRS)))
        assert pin.kind is PinKind.TPM_QUOTE

        challenge = new_challenge()
        answer = PinAnswer.from_json((await tpm_pin_answer(tpm, challenge, PCRS)).to_json())
        assert verify_pin_answer(pin, answer, expected_nonce=challenge).name == "worker-tee"

        # Replaying the answer to another challenge is refused.
        with pytest.raises(NonceMismatch):
            verify_pin_answer(pin, answer, expected_nonce=new_challenge())

        # A quote of other PCRs than pinned is refused.
        other = await tpm_pin_answer(tpm, challenge, (16,))
        with pytest.raises(PcrMismatch):
            verify_pin_answer(pin, other, expected_nonce=challenge)

        # The workload state changes (PCR 16 extended): refused.
        await tpm.pcr_extend(16, hashlib.sha256(b"tampered workload").digest())
        changed = await tpm_pin_answer(tpm, challenge, PCRS)
        with pytest.raises(PcrMismatch):
            verify_pin_answer(pin, changed, expected_nonce=challenge)
    finally:
        await tpm.aclose()

    # A quote by another TPM's attestation key (right nonce, right PCR values): refused.
    async with start_swtpm(run_dir=tmp_path / "other") as other_tpm:
        impostor = await Tpm.connect(other_tpm.tcti)
        try:
            forged = await tpm_pin_answer_fresh(impostor, challenge)
            with pytest.raises(SignatureInvalid):
                verify_pin_answer(pin, forged, expected_nonce=challenge)
        finally:
            await impostor.aclose()


async def tpm_pin_answer_fresh(tpm: Tpm, challenge: bytes) -> PinAnswer:
    await tpm_enroll_pin(tpm, "impostor", PCRS)  # creates its AK
    return await tpm_pin_answer(tpm, challenge, PCRS)


def test_software_pin() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pin = CallerPin.from_json(software_pin("ci-runner", key).to_json())
    challenge = new_challenge()
    assert verify_pin_answer(pin, software_answer(key, challenge), expected_nonce=challenge)
    with pytest.raises(AttestationRefused):
        verify_pin_answer(pin, software_answer(key, challenge), expected_nonce=new_challenge())
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignatureInvalid):
        verify_pin_answer(pin, software_answer(stranger, challenge), expected_nonce=challenge)
    # An answer of the wrong kind is refused.
    with pytest.raises(SignatureInvalid):
        verify_pin_answer(
            pin,
            PinAnswer(kind=PinKind.TPM_QUOTE, signature=b"\x01" * 64, attest=b"x"),
            expected_nonce=challenge,
        )


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        '{"name": "x", "kind": "nope", "key": ""}',
        '{"name": "Bad Name", "kind": "p256-key", "key": "00"}',
        '{"name": "ok", "kind": "p256-key", "key": "zz"}',
        '{"name": "ok", "kind": "p256-key", "key": "' + "11" * 64 + '"}',
        '{"name": "ok", "kind": "tpm-quote", "key": "0023", "pcrs": [1], "pcr_digest": "'
        + "00" * 32
        + '"}',
    ],
)
def test_malformed_pins_are_refused(text: str) -> None:
    with pytest.raises(AttestationMalformed):
        CallerPin.from_json(text)
