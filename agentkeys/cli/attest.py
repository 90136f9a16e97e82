"""``agentkeys attest``: the device key (K10), attestation bundles and E3 caller pins.

* ``show [--create] [--json]``: backend, public key (X ‖ Y hex) and ``device_key_hash``.
* ``bundle [--nonce HEX] [--out FILE]``: an attestation bundle (JSON) for the registry's
  ``attestation`` field; its digest goes to stderr.
* ``verify FILE [--nonce HEX] [--require-tpm] [--json]``: verify a bundle.
* ``enroll-pin NAME --pins FILE (--tpm [--pcrs LIST] | --public-key PEM) [--replace]``:
  add an E3 caller pin to a pins file (0600 in a 0700 directory). ``--tpm``
  reads this machine's TPM (attestation key and current PCR values): run it
  on the caller's machine in its known-good state.

Common options: ``--backend auto|tpm|software``, ``--tcti``, ``--key-file``.
See attest/ and docs/attest.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.errors import DOMAIN_ERRORS, DomainError
from agentkeys.omni import p256_point_bytes
from attest import (
    AttestationBundle,
    AttestationMalformed,
    BackendChoice,
    CallerPin,
    PinKind,
    TpmUnavailable,
    key_hash,
    make_bundle,
    open_device_key,
    verify_bundle,
)
from attest.device_key import tpm_configured
from attest.pin import load_pins, save_pins

_DEFAULT_PIN_PCRS = "0,1,2,3,4,5,6,7"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    attest = sub.add_parser("attest", help="device key, attestation bundles, E3 caller pins")
    attest_sub = attest.add_subparsers(
        dest="attest_command", metavar="ATTEST_COMMAND", required=True
    )

    def key_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            choices=[c.value for c in BackendChoice],
            default=BackendChoice.AUTO.value,
            help="device-key backend (auto: the TPM when reachable)",
        )
        p.add_argument("--tcti", default=None, help="TPM connection (default /dev/tpmrm0)")
        p.add_argument("--key-file", type=Path, default=None, help="software K10 key file")

    show = attest_sub.add_parser(
        "show",
        epilog="example: agentkeys attest show --backend software --key-file k10.pem",
        help="show the device key",
    )
    key_options(show)
    show.add_argument("--create", action="store_true", help="create the key if absent")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)

    bundle = attest_sub.add_parser(
        "bundle",
        epilog="example: agentkeys attest bundle --nonce $(openssl rand -hex 16) --out bundle.json",
        help="produce an attestation bundle",
    )
    key_options(bundle)
    bundle.add_argument("--nonce", default=None, help="verifier's challenge (64 hex)")
    bundle.add_argument("--out", type=Path, default=None, help="write here (default stdout)")
    bundle.set_defaults(func=_bundle)

    verify = attest_sub.add_parser(
        "verify",
        epilog="example: agentkeys attest verify bundle.json --require-tpm --json",
        help="verify an attestation bundle",
    )
    verify.add_argument("file", type=Path, help="bundle JSON ('-' for stdin)")
    verify.add_argument("--nonce", default=None, help="the challenge it must answer (64 hex)")
    verify.add_argument("--require-tpm", action="store_true", help="refuse software keys")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(func=_verify)

    enroll = attest_sub.add_parser(
        "enroll-pin",
        epilog="example: agentkeys attest enroll-pin coder --pins pins.json --tpm",
        help="enroll an E3 caller pin",
    )
    enroll.add_argument("name", help="the caller's name in policy")
    enroll.add_argument("--pins", type=Path, required=True, help="pins file to update")
    how = enroll.add_mutually_exclusive_group(required=True)
    how.add_argument("--tpm", action="store_true", help="pin this machine's TPM state")
    how.add_argument("--public-key", type=Path, help="pin a P-256 public key (PEM)")
    enroll.add_argument("--tcti", default=None, help="TPM connection for --tpm")
    enroll.add_argument(
        "--pcrs", default=_DEFAULT_PIN_PCRS, help="PCR indices for --tpm (comma-separated)"
    )
    enroll.add_argument("--replace", action="store_true", help="replace a pin of that name")
    enroll.set_defaults(func=_enroll)


def _fail(command: str, exc: DomainError) -> int:
    print(f"agentkeys attest {command}: {exc.reason}", file=sys.stderr)
    return 1


def _nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    value = text.lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise AttestationMalformed("--nonce must be 32 bytes as 64 hex digits")
    return raw


def _show(args: argparse.Namespace) -> int:
    async def run() -> dict[str, str]:
        key = await open_device_key(
            args.backend, key_path=args.key_file, tcti=args.tcti, create=args.create
        )
        try:
            return {
                "backend": key.backend.value,
                "public_key": p256_point_bytes(key.public_key).hex(),
                "device_key_hash": key_hash(key),
            }
        finally:
            await key.aclose()

    try:
        info = trio.run(run)
    except DOMAIN_ERRORS as exc:
        return _fail("show", exc)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for field, value in info.items():
            print(f"{field + ':':17}{value}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    async def run() -> AttestationBundle:
        key = await open_device_key(
            args.backend, key_path=args.key_file, tcti=args.tcti, create=False
        )
        try:
            return await make_bundle(key, _nonce(args.nonce))
        finally:
            await key.aclose()

    try:
        bundle = trio.run(run)
    except DOMAIN_ERRORS as exc:
        return _fail("bundle", exc)
    text = bundle.canonical().decode() + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    print(f"attestation digest: {bundle.digest()}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"agentkeys attest verify: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    try:
        verified = verify_bundle(
            AttestationBundle.from_json(raw),
            expected_nonce=_nonce(args.nonce),
            require_tpm=args.require_tpm,
        )
    except DOMAIN_ERRORS as exc:
        return _fail("verify", exc)
    info = {
        "backend": verified.backend.value,
        "device_key_hash": verified.device_key_hash,
        "tpm_resident": verified.tpm_resident,
        "attestation_key": verified.ak_name,
        "pcrs": list(verified.pcr_selection),
        "pcr_digest": verified.pcr_digest,
        "digest": verified.digest,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for field, value in info.items():
            print(f"{field + ':':17}{value}")
    if args.nonce is None:
        print("note: no --nonce given, so freshness was not checked", file=sys.stderr)
    return 0


def _parse_pcrs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise AttestationMalformed("--pcrs is a comma-separated list of indices") from exc


def _software_pin(name: str, pem_path: Path) -> CallerPin:
    try:
        loaded = serialization.load_pem_public_key(pem_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AttestationMalformed(f"cannot read a public key from {pem_path}") from exc
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
        loaded.curve, ec.SECP256R1
    ):
        raise AttestationMalformed(f"{pem_path} is not a P-256 public key")
    return CallerPin(name=name, kind=PinKind.P256_KEY, key=p256_point_bytes(loaded))


def _enroll(args: argparse.Namespace) -> int:
    async def tpm_pin() -> CallerPin:
        target = tpm_configured(args.tcti)
        if target is None:
            raise TpmUnavailable("no TPM configured (give --tcti)")
        from attest.tpm import Tpm, tpm_enroll_pin

        tpm = await Tpm.connect(target)
        try:
            return await tpm_enroll_pin(tpm, args.name, _parse_pcrs(args.pcrs))
        finally:
            await tpm.aclose()

    try:
        pins = load_pins(args.pins)
        if args.name in pins and not args.replace:
            print(
                f"agentkeys attest enroll-pin: a pin named {args.name!r} exists (use --replace)",
                file=sys.stderr,
            )
            return 1
        pin = trio.run(tpm_pin) if args.tpm else _software_pin(args.name, args.public_key)
        pins[pin.name] = pin
        save_pins(args.pins, pins)
    except DOMAIN_ERRORS as exc:
        return _fail("enroll-pin", exc)
    print(f"enrolled {pin.kind.value} pin {pin.name!r} in {args.pins}")
    return 0
