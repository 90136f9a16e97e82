"""E3: pin a TEE/TPM caller and check its challenge answers (SPEC.md 8).

The daemon issues a fresh 32-byte challenge (:func:`new_challenge`); the caller
answers (:class:`PinAnswer`) and the daemon checks the answer against the
caller's enrolled :class:`CallerPin` with :func:`verify_pin_answer`.

* ``tpm-quote`` pin: the attestation key's TPMT_PUBLIC (must be a restricted,
  TPM-resident signing key), a PCR selection (SHA-256 bank) and the expected
  PCR digest. The answer is a TPM2_Quote over the challenge of exactly those
  PCRs. It proves: the answer comes from the TPM holding that key, now (nonce),
  and those PCRs hold the pinned values, i.e. the measured workload state.
* ``p256-key`` pin (software fallback): a P-256 public key. The answer is an
  ECDSA signature over sha256("agentkeys.e3.pin.v1" ‖ challenge). It proves
  possession of the key, nothing about the workload.

JSON forms use lowercase hex for binary fields. The TPM side of the client
helper lives in :mod:`attest.tpm` (``tpm_pin_answer``, ``tpm_enroll_pin``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from attest._files import read_private_file, write_private_file
from attest._json import get_hex, get_pcrs, get_str, loads_object
from attest.errors import AttestationMalformed, SignatureInvalid
from attest.k10_signature import k10_raw_from_der, verify_k10
from attest.p256 import point_bytes, public_key_from_point
from attest.quote import normalise_pcrs, verify_quote
from attest.tpm_public import parse_tpm_public

PIN_DOMAIN = b"agentkeys.e3.pin.v1"
CHALLENGE_SIZE = 32
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)


class PinKind(enum.StrEnum):
    TPM_QUOTE = "tpm-quote"
    P256_KEY = "p256-key"


@dataclass(frozen=True, slots=True)
class CallerPin:
    """An enrolled E3 caller.

    Attributes:
        name: the policy's name for this caller (``^[a-z0-9][a-z0-9._-]{0,63}$``).
        kind: how it answers.
        key: ``tpm-quote``: the attestation key's TPMT_PUBLIC; ``p256-key``: X ‖ Y.
        pcrs: ``tpm-quote`` only: the PCR indices (SHA-256 bank).
        pcr_digest: ``tpm-quote`` only: sha256 of those PCR values.
    """

    name: str
    kind: PinKind
    key: bytes
    pcrs: tuple[int, ...] = ()
    pcr_digest: bytes = b""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise AttestationMalformed("a pin name matches ^[a-z0-9][a-z0-9._-]{0,63}$")
        if self.kind is PinKind.TPM_QUOTE:
            parse_tpm_public(self.key)
            if normalise_pcrs(self.pcrs) != self.pcrs or not self.pcrs:
                raise AttestationMalformed("a tpm-quote pin needs sorted, unique PCR indices")
            if len(self.pcr_digest) != 32:
                raise AttestationMalformed("a tpm-quote pin needs a 32-byte PCR digest")
        else:
            _p256(self.key)
            if self.pcrs or self.pcr_digest:
                raise AttestationMalformed("a p256-key pin has no PCRs")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "key": self.key.hex()}
        if self.kind is PinKind.TPM_QUOTE:
            out["pcrs"] = list(self.pcrs)
            out["pcr_digest"] = self.pcr_digest.hex()
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str | bytes) -> CallerPin:
        """Parse a pin (a JSON object or its text).

        Raises:
            AttestationMalformed: any field missing or malformed.
        """
        if not isinstance(obj, dict):
            obj = loads_object(obj, "caller pin")
        what = "caller pin"
        try:
            kind = PinKind(get_str(obj, "kind", what))
        except ValueError as exc:
            raise AttestationMalformed("caller pin: unknown kind") from exc
        if kind is PinKind.TPM_QUOTE:
            return cls(
                name=get_str(obj, "name", what),
                kind=kind,
                key=get_hex(obj, "key", what),
                pcrs=get_pcrs(obj, "pcrs", what),
                pcr_digest=get_hex(obj, "pcr_digest", what, size=32),
            )
        return cls(name=get_str(obj, "name", what), kind=kind, key=get_hex(obj, "key", what))


@dataclass(frozen=True, slots=True)
class PinAnswer:
    """A caller's answer to a challenge: a quote (``attest`` set) or a plain signature."""

    kind: PinKind
    signature: bytes
    attest: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "signature": self.signature.hex(),
            "attest": self.attest.hex(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str | bytes) -> PinAnswer:
        if not isinstance(obj, dict):
            obj = loads_object(obj, "pin answer")
        try:
            kind = PinKind(get_str(obj, "kind", "pin answer"))
        except ValueError as exc:
            raise AttestationMalformed("pin answer: unknown kind") from exc
        return cls(
            kind=kind,
            signature=get_hex(obj, "signature", "pin answer", size=64),
            attest=get_hex(obj, "attest", "pin answer"),
        )


@dataclass(frozen=True, slots=True)
class VerifiedPin:
    name: str
    kind: PinKind


def load_pins(path: Path) -> dict[str, CallerPin]:
    """Read a pins file (``{"v": 1, "pins": [pin, ...]}``; 0600 in a 0700 dir, ours).

    Returns an empty mapping when the file does not exist.

    Raises:
        InsecurePath: the file or directory could be changed by others.
        AttestationMalformed: bad JSON, a bad pin, or a name used twice.
    """
    try:
        text = read_private_file(path, max_size=1 << 20)
    except FileNotFoundError:
        return {}
    obj = loads_object(text, "pins file")
    entries = obj.get("pins")
    if type(obj.get("v")) is not int or obj["v"] != 1 or not isinstance(entries, list):
        raise AttestationMalformed('pins file: expected {"v": 1, "pins": [...]}')
    pins: dict[str, CallerPin] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise AttestationMalformed("pins file: each pin is an object")
        pin = CallerPin.from_json(entry)
        if pin.name in pins:
            raise AttestationMalformed(f"pins file: pin {pin.name!r} appears twice")
        pins[pin.name] = pin
    return pins


def save_pins(path: Path, pins: dict[str, CallerPin]) -> None:
    """Write a pins file atomically (0600 in a 0700 directory)."""
    body = {"v": 1, "pins": [pins[name].to_json() for name in sorted(pins)]}
    write_private_file(path, json.dumps(body, indent=2).encode() + b"\n", overwrite=True)


def _p256(point: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return public_key_from_point(point)
    except AttestationMalformed as exc:
        raise AttestationMalformed("the pinned key is not a P-256 point") from exc


def new_challenge() -> bytes:
    """A fresh challenge; the verifier keeps it and uses it once."""
    return secrets.token_bytes(CHALLENGE_SIZE)


def software_answer_digest(challenge: bytes) -> bytes:
    return hashlib.sha256(PIN_DOMAIN + challenge).digest()


def software_pin(name: str, private_key: ec.EllipticCurvePrivateKey) -> CallerPin:
    """Client helper: the pin for a software (P-256 key) caller."""
    return CallerPin(name=name, kind=PinKind.P256_KEY, key=point_bytes(private_key.public_key()))


def software_answer(private_key: ec.EllipticCurvePrivateKey, challenge: bytes) -> PinAnswer:
    """Client helper: answer ``challenge`` with a P-256 key (software fallback)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    der = private_key.sign(software_answer_digest(challenge), ec.ECDSA(Prehashed(hashes.SHA256())))
    return PinAnswer(kind=PinKind.P256_KEY, signature=k10_raw_from_der(der))


def verify_pin_answer(pin: CallerPin, answer: PinAnswer, *, expected_nonce: bytes) -> VerifiedPin:
    """Check a caller's answer against its pin.

    Args:
        pin: the enrolled pin.
        answer: the caller's answer.
        expected_nonce: the challenge the daemon issued for this exchange.

    Raises:
        SignatureInvalid, NonceMismatch, PcrMismatch, KeyNotTrusted, AttestationMalformed.
    """
    if answer.kind is not pin.kind:
        raise SignatureInvalid("the answer is not of the pinned kind")
    if pin.kind is PinKind.TPM_QUOTE:
        verify_quote(
            answer.attest,
            answer.signature,
            ak=parse_tpm_public(pin.key),
            expected_nonce=expected_nonce,
            expected_pcrs=pin.pcrs,
            expected_pcr_digest=pin.pcr_digest,
        )
    elif not verify_k10(
        _p256(pin.key), answer.signature, digest=software_answer_digest(expected_nonce)
    ):
        raise SignatureInvalid("the answer is not signed by the pinned key for this challenge")
    return VerifiedPin(name=pin.name, kind=pin.kind)
