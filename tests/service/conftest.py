"""Service-base fixtures: a deployment PKI and a foreign one, on disk under tmp_path."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentkeys.pki import Role, init_ca, issue_certificate


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def make_pki(directory: Path) -> Pki:
    ca, _ = init_ca(directory)
    for role in Role:
        issue_certificate(directory, role)
    return Pki(directory=directory, ca=ca)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The deployment CA with signer, broker and worker certificates."""
    return make_pki(tmp_path_factory.mktemp("pki") / "deployment")


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA with the same role names: its certificates must be worthless."""
    return make_pki(tmp_path_factory.mktemp("pki") / "foreign")


def self_signed_certificate(directory: Path, role: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"agentkeys:role:{role}")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    """A self-signed certificate naming ``role`` as our certificates do: it must get nothing."""
    cert_path, key_path = directory / f"self-{role}.crt", directory / f"self-{role}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
