"""The HTTP service base shared by the signer, the broker and the worker (SPEC.md section 7).

A service is a core object owning a nursery; its ``serve`` builds a
:class:`ServiceApp` (routes + ONE authorization table, JSON errors, bounded
bodies, an audit row per request, ``/healthz``, ``/readyz`` and ``/metrics``)
and runs :func:`serve_http` (Hypercorn on
127.0.0.1, optionally mutual TLS with the caller's role from its client
certificate) inside that nursery. See docs/signer.md for a worked example.
"""

from agentkeys.service._app import (
    PEER_SCOPE_KEY,
    PUBLIC,
    Access,
    Call,
    Handler,
    Peer,
    ReadinessCheck,
    Reply,
    Route,
    ServiceApp,
    allow,
)
from agentkeys.service._audit import AuditEvent, AuditSink, JsonLinesAudit, MemoryAudit
from agentkeys.service._client import mtls_client
from agentkeys.service._json import JsonObject, decode, decode_body, parse_json_object
from agentkeys.service._main import service_main
from agentkeys.service._metrics import METRICS_CONTENT_TYPE, ServiceMetrics
from agentkeys.service._openapi import OPENAPI_PATH, openapi_document
from agentkeys.service._serve import BoundAddress, ServerSettings, ServerTls, serve_http

__all__ = [
    "METRICS_CONTENT_TYPE",
    "OPENAPI_PATH",
    "PEER_SCOPE_KEY",
    "PUBLIC",
    "Access",
    "AuditEvent",
    "AuditSink",
    "BoundAddress",
    "Call",
    "Handler",
    "JsonLinesAudit",
    "JsonObject",
    "MemoryAudit",
    "Peer",
    "ReadinessCheck",
    "Reply",
    "Route",
    "ServerSettings",
    "ServerTls",
    "ServiceApp",
    "ServiceMetrics",
    "allow",
    "decode",
    "decode_body",
    "mtls_client",
    "openapi_document",
    "parse_json_object",
    "serve_http",
    "service_main",
]
