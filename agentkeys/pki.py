"""The deployment's mutual-TLS PKI: a CA and per-role certificates (SPEC.md section 7).

The signer serves only the broker and the worker over mutual TLS. Every
certificate is issued by the deployment CA created by :func:`init_ca`; the
*role* of its holder is carried in the certificate as

* a URI subjectAltName ``agentkeys:role:<role>`` (exactly one), and
* an extended key usage that matches the role's side of the connection:
  ``serverAuth`` for ``signer`` (which also gets DNS/IP SANs, by default
  ``localhost`` and ``127.0.0.1``), ``clientAuth`` for ``broker`` and
  ``worker``.

A role is believed only from a certificate directly issued by the deployment
CA (:func:`role_of_certificate` re-checks the issuer signature, validity,
``CA:FALSE`` and the EKU after the TLS stack has verified the chain), so a
self-signed or foreign certificate naming a role gets nothing. The TLS
contexts built here trust the deployment CA only, never the system store.

Files: ``ca.crt``/``ca.key`` and ``<name>.crt``/``<name>.key`` in one
directory (mode 0700), every file 0600, created exclusively: an existing file
is never overwritten unless ``replace=True`` is passed explicitly. Keys are
ECDSA P-256, PKCS#8 PEM, unencrypted (protected by file mode; production keys
live in the TEE's sealed storage).
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentkeys._files import write_private
from agentkeys.config import check_not_writable_by_others, check_private_file
from agentkeys.errors import AgentkeysError

__all__ = [
    "CLIENT_ROLES",
    "ROLE_URI_PREFIX",
    "SERVER_ROLES",
    "CertificateExists",
    "CertificateRejected",
    "IssuedCertificate",
    "PkiError",
    "PkiFileError",
    "Role",
    "UnknownRole",
    "ca_paths",
    "client_ssl_context",
    "default_pki_dir",
    "init_ca",
    "issue_certificate",
    "load_certificate",
    "parse_role",
    "role_of_certificate",
    "server_ssl_context",
]

ROLE_URI_PREFIX = "agentkeys:role:"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_CA_VALID_DAYS = 3650
_LEAF_VALID_DAYS = 397


class PkiError(AgentkeysError):
    """Base of PKI failures."""

    error: ClassVar[str] = "pki_error"
    status: ClassVar[int] = 500


class CertificateExists(PkiError):
    """A CA or certificate file already exists and replacing it was not requested."""

    error: ClassVar[str] = "certificate_exists"


class PkiFileError(PkiError):
    """A PKI file or directory is missing, unreadable or has unsafe permissions."""

    error: ClassVar[str] = "pki_file_error"


class UnknownRole(PkiError):
    """The requested role is not one of agentkeys' roles."""

    error: ClassVar[str] = "unknown_role"
    status: ClassVar[int] = 400


class CertificateRejected(PkiError):
    """A peer certificate is not a valid role certificate of this deployment."""

    error: ClassVar[str] = "certificate_rejected"
    status: ClassVar[int] = 403


class Role(enum.StrEnum):
    """Who holds a certificate."""

    SIGNER = "signer"
    BROKER = "broker"
    WORKER = "worker"


SERVER_ROLES: frozenset[Role] = frozenset({Role.SIGNER})
CLIENT_ROLES: frozenset[Role] = frozenset({Role.BROKER, Role.WORKER})


@dataclass(frozen=True)
class IssuedCertificate:
    """Where a certificate and its private key were written."""

    role: Role
    cert_path: Path
    key_path: Path


def default_pki_dir() -> Path:
    """``$XDG_CONFIG_HOME/agentkeys/pki`` (default ``~/.config/agentkeys/pki``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agentkeys" / "pki"


def ca_paths(directory: Path) -> tuple[Path, Path]:
    """``(ca.crt, ca.key)`` inside ``directory``."""
    return directory / "ca.crt", directory / "ca.key"


def parse_role(value: str) -> Role:
    """The :class:`Role` named ``value``.

    Raises:
        UnknownRole: ``value`` names no role.
    """
    try:
        return Role(value)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        raise UnknownRole(f"unknown role {value!r} (expected one of: {allowed})") from exc


def _private_dir(directory: Path) -> None:
    """Create ``directory`` 0700 (parents too), or check an existing one is 0700 and ours."""
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    st = directory.stat()
    if st.st_uid not in (os.geteuid(), 0):
        raise PkiFileError(f"{directory} is not owned by this user")
    if st.st_mode & 0o077:
        raise PkiFileError(f"{directory} is accessible by group or others (chmod 700)")


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``path`` as a 0600 file; never over an existing file unless ``replace``."""
    try:
        write_private(path, data, exclusive=not replace)
    except FileExistsError as exc:
        raise CertificateExists(
            f"{path} already exists; refusing to overwrite it (pass replace to rotate)"
        ) from exc


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(
    directory: Path,
    *,
    common_name: str = "agentkeys development CA",
    now: datetime.datetime | None = None,
) -> tuple[Path, Path]:
    """Create the deployment CA (self-signed, P-256, path length 0) in ``directory``.

    Returns:
        ``(ca.crt, ca.key)``.

    Raises:
        CertificateExists: a CA already exists there.
        PkiFileError: the directory is unsafe.
    """
    _private_dir(directory)
    cert_path, key_path = ca_paths(directory)
    if cert_path.exists() or key_path.exists():
        raise CertificateExists(f"a CA already exists in {directory}; refusing to replace it")
    start = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=_CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key), replace=False)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), replace=False)
    return cert_path, key_path


def load_certificate(path: Path) -> x509.Certificate:
    """Load a PEM certificate from a file others cannot modify.

    Raises:
        PkiFileError: missing, unsafe or not a PEM certificate.
    """
    try:
        check_not_writable_by_others(path)
        return x509.load_pem_x509_certificate(path.read_bytes())
    except AgentkeysError as exc:
        raise PkiFileError(exc.reason) from exc
    except (OSError, ValueError) as exc:
        raise PkiFileError(f"cannot load certificate {path}: {exc}") from exc


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_paths(directory)
    cert = load_certificate(cert_path)
    try:
        check_private_file(key_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except AgentkeysError as exc:
        raise PkiFileError(exc.reason) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise PkiFileError(f"cannot load the CA key {key_path}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiFileError(f"{key_path} is not an EC private key")
    return cert, key


def issue_certificate(
    directory: Path,
    role: Role,
    *,
    name: str | None = None,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    replace: bool = False,
    now: datetime.datetime | None = None,
    valid_days: int = _LEAF_VALID_DAYS,
) -> IssuedCertificate:
    """Issue a certificate for ``role`` from the CA in ``directory``.

    Args:
        directory: the PKI directory holding ``ca.crt``/``ca.key``.
        role: the holder's role (fixes the URI SAN and the EKU).
        name: file stem and common name (default: the role's name).
        hosts: DNS names / IP addresses for a server role's SAN (ignored for
            client roles).
        replace: overwrite an existing certificate of that name (rotation).
        now: issue time (tests).
        valid_days: validity period.

    Raises:
        CertificateExists: the files exist and ``replace`` is false.
        PkiFileError: no CA, or unsafe files.
    """
    stem = name or role.value
    if _NAME.fullmatch(stem) is None or stem == "ca":
        raise PkiFileError("certificate names match ^[a-z0-9][a-z0-9_-]{0,63}$ and are not 'ca'")
    _private_dir(directory)
    ca_cert, ca_key = _load_ca(directory)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    if not replace and (cert_path.exists() or key_path.exists()):
        raise CertificateExists(f"{cert_path} already exists; refusing to overwrite it")
    start = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role.value)]
    if role in SERVER_ROLES:
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        eku = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        eku = ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, stem),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key), replace=replace)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), replace=replace)
    return IssuedCertificate(role=role, cert_path=cert_path, key_path=key_path)


def role_of_certificate(
    der: bytes, ca: x509.Certificate, *, now: datetime.datetime | None = None
) -> Role:
    """The role a peer certificate grants, checked against the deployment CA.

    Args:
        der: the peer's leaf certificate (DER), as the TLS stack presents it.
        ca: the deployment CA certificate.
        now: the time to check validity at (default: now).

    Returns:
        The role named by the certificate's single ``agentkeys:role:`` URI SAN.

    Raises:
        CertificateRejected: not directly issued by ``ca``, expired, a CA
            certificate, no or several role URIs, an unknown role, or an EKU
            that does not match the role.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateRejected("peer certificate is not valid DER") from exc
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateRejected("peer certificate is not issued by the deployment CA") from exc
    at = now or _utcnow()
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateRejected("peer certificate is outside its validity period")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateRejected("peer certificate lacks a required extension") from exc
    if basic.ca:
        raise CertificateRejected("peer certificate is a CA certificate")
    uris = [
        u
        for u in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(ROLE_URI_PREFIX)
    ]
    if len(uris) != 1:
        raise CertificateRejected("peer certificate must name exactly one agentkeys role")
    try:
        role = Role(uris[0].removeprefix(ROLE_URI_PREFIX))
    except ValueError as exc:
        raise CertificateRejected("peer certificate names an unknown role") from exc
    wanted = (
        ExtendedKeyUsageOID.SERVER_AUTH
        if role in SERVER_ROLES
        else (ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    if wanted not in ekus:
        raise CertificateRejected("peer certificate's key usage does not match its role")
    return role


def _tls13_context(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, ca: Path) -> None:
    try:
        check_not_writable_by_others(cert)
        check_not_writable_by_others(ca)
        check_private_file(key)
        ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except AgentkeysError as exc:
        raise PkiFileError(exc.reason) from exc
    except (OSError, ssl.SSLError) as exc:
        raise PkiFileError(f"cannot load TLS material ({cert.name}, {key.name}): {exc}") from exc


def server_ssl_context(*, cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A TLS 1.3 server context that requires a client certificate from ``client_ca``.

    Only ``client_ca`` is trusted (no system store). The role check on the
    verified certificate is :func:`role_of_certificate`, done per connection by
    the service base.

    Raises:
        PkiFileError: unreadable or unsafe files.
    """
    ctx = _tls13_context(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, cert, key, client_ca)
    return ctx


def client_ssl_context(*, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A TLS 1.3 client context presenting ``cert`` and trusting only ``ca`` (hostname checked).

    Raises:
        PkiFileError: unreadable or unsafe files.
    """
    ctx = _tls13_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    _load_chain(ctx, cert, key, ca)
    return ctx
