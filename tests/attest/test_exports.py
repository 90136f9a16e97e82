"""The public surface of ``attest`` is deliberate: pin it."""

from __future__ import annotations

import attest


def test_exported_names() -> None:
    assert sorted(attest.__all__) == sorted(
        [
            "AttestError", "AttestationBundle", "AttestationMalformed", "AttestationRefused",
            "Backend", "BackendChoice", "CallerAttestor", "CallerGone", "CallerIdentity",
            "CallerNotLocal", "CallerPin", "CallerUnidentified", "DeviceKey", "DeviceKeyError",
            "ExeHashCache", "InsecurePath", "KeyNotTrusted", "NonceMismatch",
            "PcrMismatch", "PinAnswer", "PinKind", "ProcessIdentity", "SealBackend", "Sealer",
            "SignatureInvalid", "SoftwareDeviceKey", "SoftwareSealer", "TpmError",
            "TpmEvidence", "TpmUnavailable", "Transport", "UnsealFailed", "VerifiedBundle",
            "VerifiedPin", "caller_from_scope", "create_loopback_listener",
            "create_unix_listener", "default_key_path",
            "identify_tcp_peer", "identify_unix_peer", "key_hash", "make_bundle",
            "new_challenge", "open_device_key", "open_sealer",
            "software_answer", "software_pin", "verify_bundle", "verify_pin_answer",
        ]
    )  # fmt: skip
    for name in attest.__all__:
        assert getattr(attest, name) is not None


def test_importing_attest_does_not_load_tpm2_pytss() -> None:
    import subprocess
    import sys

    code = "import sys, attest; print('tpm2_pytss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_subclass_attests_own_root() -> None:
    from attest.errors import AttestError

    for name in attest.__all__:
        value = getattr(attest, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, AttestError), name
