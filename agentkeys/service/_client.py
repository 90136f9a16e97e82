"""An httpx client for calling another agentkeys service over mutual TLS.

The client presents a role certificate, trusts only the deployment CA (never
the system store), checks the server's hostname, and, with ``expected_role``,
checks on every response (before its body is read) that the server's
certificate is a deployment certificate of that role.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from agentkeys.pki import (
    CertificateRejected,
    Role,
    client_ssl_context,
    load_certificate,
    role_of_certificate,
)

__all__ = ["mtls_client"]


def mtls_client(
    *,
    base_url: str,
    ca: Path,
    cert: Path,
    key: Path,
    expected_role: Role | None = Role.SIGNER,
    timeout: float = 10.0,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``base_url`` authenticating with ``cert``/``key``.

    The caller owns the client (``async with mtls_client(...) as client:``).

    Args:
        base_url: e.g. ``https://127.0.0.1:4431``.
        ca: the deployment CA certificate (the only trust anchor).
        cert: this caller's role certificate.
        key: its private key (0600).
        expected_role: the role the server's certificate must carry; ``None``
            skips the role check (the CA and hostname are still checked).
        timeout: per-request timeout in seconds.

    Raises:
        agentkeys.pki.PkiFileError: unreadable or unsafe files.

    A response from a server whose certificate lacks ``expected_role`` raises
    :class:`agentkeys.pki.CertificateRejected` out of the request call.
    """
    context = client_ssl_context(cert=cert, key=key, ca=ca)
    hooks: dict[str, list[object]] = {"request": [], "response": []}
    if expected_role is not None:
        ca_cert = load_certificate(ca)
        role = expected_role

        async def check_server(response: httpx.Response) -> None:
            stream = response.extensions.get("network_stream")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if not der:
                raise CertificateRejected("the server presented no certificate")
            if role_of_certificate(der, ca_cert) is not role:
                raise CertificateRejected(f"the server is not the deployment's {role.value}")

        hooks["response"].append(check_server)
    return httpx.AsyncClient(
        base_url=base_url,
        verify=context,
        timeout=timeout,
        event_hooks=hooks,  # type: ignore[arg-type]
        trust_env=False,
    )
