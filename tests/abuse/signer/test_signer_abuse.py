"""mTLS role spoofing and slow clients against the real signer.

Every attempt is refused, and every refusal is an audit row: connections that fail the
TLS handshake (no certificate, a certificate from another CA, a self-signed certificate
naming a role, a client that never finishes the handshake) as ``connection_refused``;
valid certificates used for another role's routes as ``denied`` requests.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.service import OPENAPI_PATH, AuditEvent, ServerSettings
from agentkeys.signer import OidcSettings, SignerService, StsExchanger
from tests.service.conftest import Pki, self_signed_certificate
from tests.signer.conftest import Chain, RunningSigner, seed_state

ROUTES = {
    "derive_cred_kek": ("POST", "/derive-cred-kek"),
    "sts_credentials": ("POST", "/sts-credentials"),
    "verify_k10_sig": ("POST", "/verify/k10-sig"),
    "verify_k11_assertion": ("POST", "/verify/k11-assertion"),
    "k4_address": ("POST", "/k4/address"),
    "k4_siwe_sign": ("POST", "/k4/siwe-sign"),
    "oidc_jwks": ("GET", "/oidc/jwks"),
    "status": ("GET", "/status"),
}
WORKER_ONLY = {"derive_cred_kek", "sts_credentials"}
BROKER_ONLY = {"k4_address", "k4_siwe_sign"}


async def _refusals(events: list[AuditEvent], count: int) -> list[AuditEvent]:
    with trio.fail_after(10):
        while True:
            found = [e for e in events if e.kind == "connection_refused"]
            if len(found) >= count:
                return found
            await trio.sleep(0.02)


def _context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.check_hostname = False
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def test_spoofed_client_certificates_get_no_request_through(
    signer: RunningSigner, pki: Pki, foreign_pki: Pki, tmp_path: Path
) -> None:
    self_cert, self_key = self_signed_certificate(tmp_path, "broker")
    contexts = {
        "no certificate": _context(pki.ca),
        "another CA's broker": _context(
            pki.ca, foreign_pki.cert("broker"), foreign_pki.key("broker")
        ),
        "self-signed broker": _context(pki.ca, self_cert, self_key),
    }
    before = len(signer.audit.events)
    for name, ctx in contexts.items():
        async with httpx.AsyncClient(verify=ctx, trust_env=False, timeout=10) as client:
            with pytest.raises(httpx.TransportError):
                await client.post(signer.bound.url + "/k4/address", json={})
        del name
    events = signer.audit.events[before:]
    refusals = await _refusals(events, len(contexts))
    assert all(e.outcome == "denied" and e.peer_role is None for e in refusals)
    assert not [e for e in signer.audit.events[before:] if e.kind == "request"]


async def test_the_servers_own_certificate_is_no_client_role(
    signer: RunningSigner, pki: Pki
) -> None:
    before = len(signer.audit.events)
    async with signer.client(pki, "signer") as client:
        with pytest.raises(httpx.TransportError):
            await client.get(OPENAPI_PATH)
    refusals = await _refusals(signer.audit.events[before:], 1)
    assert refusals[0].outcome == "denied"
    assert not [e for e in signer.audit.events[before:] if e.kind == "request"]


@pytest.mark.parametrize("role", ["worker", "broker"])
async def test_each_role_reaches_only_its_routes(
    signer: RunningSigner, pki: Pki, role: str
) -> None:
    allowed = set(ROUTES) - (BROKER_ONLY if role == "worker" else WORKER_ONLY)
    before = len(signer.audit.events)
    async with signer.client(pki, role) as client:
        for route, (method, path) in sorted(ROUTES.items()):
            response = await client.request(method, path, json={} if method == "POST" else None)
            if route in allowed:
                assert response.status_code not in (401, 403), (route, response.text)
            else:
                assert response.status_code == 403, (route, response.text)
                assert response.json()["error"] == "forbidden"
        docs = await client.get(OPENAPI_PATH)
    assert docs.status_code == 200
    rows = signer.audit.events[before:]
    denied = {e.route for e in rows if e.outcome == "denied"}
    assert denied == set(ROUTES) - allowed
    assert all(e.peer_role == role for e in rows)


async def test_openapi_document_names_the_roles_of_each_route(
    signer: RunningSigner, pki: Pki
) -> None:
    async with signer.client(pki, "worker") as client:
        doc = (await client.get(OPENAPI_PATH)).json()
    roles = {
        op["operationId"]: op["x-agentkeys-roles"]
        for item in doc["paths"].values()
        for op in item.values()
    }
    assert roles["derive_cred_kek"] == ["worker"]
    assert roles["k4_address"] == ["broker"]
    for base_route in ("openapi", "healthz", "readyz", "metrics"):
        assert roles[base_route] == ["broker", "worker"]


async def test_client_that_never_finishes_the_handshake_is_dropped_and_audited(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, sealer: object
) -> None:
    """Slow-loris on TLS: bytes of a ClientHello dribbled, never completed (timeout 1 s)."""
    from agentkeys.service import MemoryAudit
    from agentkeys.signer import KeyStore

    state_dir = tmp_path / "signer-state"
    await seed_state(state_dir, sealer)  # type: ignore[arg-type]
    audit = MemoryAudit()
    service = SignerService(
        settings=ServerSettings(
            tls_cert=pki.cert("signer"),
            tls_key=pki.key("signer"),
            tls_client_ca=pki.ca,
            handshake_timeout=1.0,
        ),
        keys=await KeyStore.open(state_dir, sealer),  # type: ignore[arg-type]
        epochs=chain.client,
        sts=StsExchanger(
            endpoint="http://127.0.0.1:9",
            role_arn="arn:aws:iam::role/none",
            region="us-east-1",
            duration_seconds=900,
        ),
        oidc=OidcSettings(issuer="http://127.0.0.1:9/issuer", audience="agentkeys-s3"),
        audit=audit,
        epoch_poll_interval=3600,
    )
    bound = await nursery.start(service.serve)
    streams = [await trio.open_tcp_stream(bound.host, bound.port) for _ in range(5)]
    closed = 0
    with trio.fail_after(15):
        for stream in streams:
            try:
                for byte in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03":
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.05)
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
            closed += 1
    for stream in streams:
        await stream.aclose()
    assert closed == len(streams)
    refusals = await _refusals(audit.events, len(streams))
    assert all(e.reason == "tls handshake timed out" for e in refusals)
