"""agentkeys.pki and ``agentkeys pki``: CA, role certificates, file safety, role checks."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from agentkeys.cli import build_parser
from agentkeys.cli import pki as pki_cli
from agentkeys.pki import (
    CertificateExists,
    CertificateRejected,
    PkiFileError,
    Role,
    init_ca,
    issue_certificate,
    load_certificate,
    role_of_certificate,
)
from tests.service.conftest import Pki


def _der(path: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return load_certificate(path).public_bytes(Encoding.DER)


def test_files_are_private(pki: Pki) -> None:
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    for path in pki.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("role", list(Role))
def test_role_is_read_back_from_the_certificate(pki: Pki, role: Role) -> None:
    ca = load_certificate(pki.ca)
    assert role_of_certificate(_der(pki.cert(role.value)), ca) is role


def test_server_certificate_names_loopback(pki: Pki) -> None:
    cert = load_certificate(pki.cert("signer"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_foreign_certificate_is_rejected(pki: Pki, foreign_pki: Pki) -> None:
    ca = load_certificate(pki.ca)
    with pytest.raises(CertificateRejected, match="not issued by the deployment CA"):
        role_of_certificate(_der(foreign_pki.cert("broker")), ca)
    with pytest.raises(CertificateRejected):
        role_of_certificate(_der(pki.ca), ca)  # the CA itself is no role
    with pytest.raises(CertificateRejected):
        role_of_certificate(b"not der", ca)


def test_expired_certificate_is_rejected(pki: Pki) -> None:
    ca = load_certificate(pki.ca)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(CertificateRejected, match="validity"):
        role_of_certificate(_der(pki.cert("worker")), ca, now=later)


def test_nothing_is_overwritten_silently(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    init_ca(directory)
    with pytest.raises(CertificateExists):
        init_ca(directory)
    first = issue_certificate(directory, Role.WORKER)
    before = first.cert_path.read_bytes()
    with pytest.raises(CertificateExists):
        issue_certificate(directory, Role.WORKER)
    assert first.cert_path.read_bytes() == before
    again = issue_certificate(directory, Role.WORKER, replace=True)
    assert again.cert_path.read_bytes() != before
    assert stat.S_IMODE(again.key_path.stat().st_mode) == 0o600
    second = issue_certificate(directory, Role.WORKER, name="worker-2")
    assert second.cert_path.name == "worker-2.crt"


def test_unsafe_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - the unsafe case under test
    with pytest.raises(PkiFileError):
        init_ca(directory)


def test_issue_without_ca_fails(tmp_path: Path) -> None:
    with pytest.raises(PkiFileError):
        issue_certificate(tmp_path / "empty", Role.BROKER)


def test_cli_init_and_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    pki_cli.register(parser.add_subparsers())
    directory = tmp_path / "cli-pki"

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        result: int = args.func(args)
        return result

    assert run("pki", "init", "--dir", str(directory)) == 0
    assert run("pki", "init", "--dir", str(directory)) == 1
    assert "refusing" in capsys.readouterr().err
    assert run("pki", "issue", "signer", "--dir", str(directory), "--host", "127.0.0.1") == 0
    assert run("pki", "issue", "signer", "--dir", str(directory)) == 1
    assert run("pki", "issue", "signer", "--dir", str(directory), "--replace") == 0
    assert (directory / "signer.key").exists()
    with pytest.raises(SystemExit):
        run("pki", "issue", "admin", "--dir", str(directory))


def test_cli_default_directory_is_under_xdg_config(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    pki_cli.register(parser.add_subparsers())
    args = parser.parse_args(["pki", "init"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(Path(os.environ["XDG_CONFIG_HOME"]) / "agentkeys" / "pki" / "ca.crt") in out
    assert build_parser() is not None
