"""The daemon's request path: a bare ASGI app (no framework routing on the hot path).

Per request, in order (SPEC.md section 8):

1. the attested caller (``attest``: E1/E2, put into the scope per connection);
2. the path names the service: ``/<service>/<upstream path>``; malformed paths (encoded
   slashes or dots, ``..``, ``//``) are refused;
3. the host-local policy (deny by default): caller → services → method/path allowlist;
4. the chain's revocations known to this daemon;
5. fail closed: the broker must have answered a heartbeat within the window (503), and the
   daemon's own device session must be valid (503 ``session_unavailable``; 403
   ``device_revoked`` once its device is revoked);
6. quotas per (caller entry, service): 429 with ``Retry-After``;
7. header validation; the caller's auth headers (placeholder key) are stripped;
8. the credential from the cache, fetched lazily through the credential source;
9. the request is forwarded with the lean pooled HTTP/1.1 client (``_upstream``), request
   and response bodies streamed;
10. one audit row, whatever happened (denials included).

``GET /healthz`` (alive), ``GET /readyz`` (broker reachable, audit log writable, device
session valid: else 503 with ``broker_unreachable``, ``audit_log_error``,
``session_invalid``, ``session_expiring`` or ``device_revoked`` among its problems) and
``GET /metrics`` (Prometheus text, ``agentkeys.service.ServiceMetrics``: requests by route
``proxy`` and status, latency, denials by error code, credential-cache hits and misses, the
broker heartbeat's age) are answered before policy, to any attested caller: none of them
names a service, a caller or a secret.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from agentkeys.daemon._upstream import (
    UpstreamPool,
    UpstreamResponse,
    parse_origin,
)
from agentkeys.daemon.auditlog import AuditLog, AuditRow
from agentkeys.daemon.cache import CredentialCache
from agentkeys.daemon.credentials import Credential, CredentialSource
from agentkeys.daemon.errors import (
    AuditLogError,
    BadProxyRequest,
    CredentialRefused,
    DaemonError,
    RequestTimeout,
    RequestTooLarge,
    UpstreamFailed,
)
from agentkeys.daemon.heartbeat import BrokerLiveness
from agentkeys.daemon.policy import Decision, Policy, ServicePolicy
from agentkeys.daemon.quota import QuotaBook, QuotaKey, QuotaLimits
from agentkeys.daemon.revocation import RevocationState
from agentkeys.daemon.session import DeviceSession
from agentkeys.daemon.usage import UsageScanner
from agentkeys.errors import DOMAIN_ERRORS, DomainError
from agentkeys.http1 import Refusal
from agentkeys.service import METRICS_CONTENT_TYPE, ServiceMetrics
from attest.caller import CallerIdentity
from attest.errors import AttestError
from attest.serve import caller_from_scope

__all__ = ["ProxyApp", "ProxyLimits"]

_log = logging.getLogger("agentkeys.daemon")

_SERVICE = re.compile(rb"/([a-z0-9][a-z0-9._-]{0,63})(/[\x21-\x7e]*)", re.ASCII)
_BAD_PATH = re.compile(rb"%2[fFeE]|%5[cC]|\\|//|/\.\.?(/|$)", re.ASCII)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]", re.ASCII)
_QUERY = re.compile(rb"[\x21-\x7e]*", re.ASCII)

# never forwarded upstream: hop-by-hop, the caller's auth (placeholder), proxy headers
_DROP_REQUEST = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"authorization",
        b"x-api-key",
        b"api-key",
        b"accept-encoding",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
    }
)
_DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_OPERATIONS = {b"/healthz": "healthz", b"/readyz": "readyz", b"/metrics": "metrics"}


@dataclass(frozen=True)
class ProxyLimits:
    """Bounds of the request path."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024
    #: the whole request body must arrive within this many seconds (408 otherwise)
    body_timeout: float = 60.0
    #: a body declared this small is read whole before an upstream connection is taken,
    #: so a slow uploader cannot hold the shared upstream pool
    prefetch_body_bytes: int = 64 * 1024


class _ClientGone(Exception):
    """The caller disconnected while its body was being read."""


@dataclass
class _Audit:
    method: str
    path: str
    #: the metrics' route label: ``proxy``, or ``connection`` for a refused connection
    route: str = "proxy"
    started: float = field(default_factory=time.perf_counter)
    audited: bool = False
    caller: CallerIdentity | None = None
    rule: str | None = None
    service: str | None = None
    upstream_status: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    responded: bool = False
    body_done: bool = False


def _answer_of(exc: DomainError) -> tuple[int, str]:
    """The status and code the daemon answers ``exc`` with (a refusing peer's own code)."""
    if isinstance(exc, CredentialRefused):
        return exc.answer_status, exc.answer_code
    return exc.status, exc.error


def _error_response(exc: DomainError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(exc.to_json(), separators=(",", ":")).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    if exc.status in (400, 408, 413):
        # the request body may be unread: close rather than wait for the rest of it
        headers.append((b"connection", b"close"))
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):
        headers.append((b"retry-after", str(retry_after).encode("ascii")))
    return _answer_of(exc)[0], headers, body


class ProxyApp:
    """The ASGI app of the daemon (see the module docstring).

    Args:
        policy: returns the current policy (reloads swap it).
        quotas, cache, source, liveness, revocations, audit: the daemon's state.
        upstream: the pooled upstream client; the caller owns and closes it. No
            redirects, cookies or environment proxies apply (see ``_upstream``).
        actor: the actor omni audit rows name.
        session: the daemon's device session (``None``: a source that needs none).
        limits: request bounds.
        clock: Unix seconds (quotas, audit).
    """

    def __init__(
        self,
        *,
        policy: Callable[[], Policy],
        quotas: QuotaBook,
        cache: CredentialCache,
        source: CredentialSource,
        liveness: BrokerLiveness,
        revocations: RevocationState,
        audit: AuditLog,
        upstream: UpstreamPool,
        actor: str | None,
        session: DeviceSession | None = None,
        limits: ProxyLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._quotas = quotas
        self._cache = cache
        self._source = source
        self._liveness = liveness
        self._revocations = revocations
        self._audit = audit
        self._upstream = upstream
        self._actor = actor
        self._session = session
        self._limits = limits or ProxyLimits()
        self._clock = clock
        #: set when the audit log could not be written: requests fail closed
        self.audit_broken = False
        self.metrics = ServiceMetrics("daemon")
        self.metrics.heartbeat_age_from(liveness.seconds_since_contact)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry point (http and lifespan)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # -- health ------------------------------------------------------------------------------

    async def _operations(self, route: str, send: Any) -> None:
        started = time.perf_counter()
        content_type = b"application/json"
        if route == "metrics":
            status, body = 200, self.metrics.render()
            content_type = METRICS_CONTENT_TYPE.encode("ascii")
        else:
            status, body = self._health(route)
        self.metrics.request(route, status, time.perf_counter() - started, None)
        await _respond(send, status, [(b"content-type", content_type)], body)

    def _health(self, route: str) -> tuple[int, bytes]:
        if route == "healthz":
            status = 200
            doc: dict[str, object] = {"status": "alive"}
        else:
            problems = []
            if not self._liveness.reachable():
                problems.append("broker_unreachable")
            if self.audit_broken:
                problems.append("audit_log_error")
            session = self._session.problem() if self._session is not None else None
            if session is not None:
                problems.append(session.value)
            status = 503 if problems else 200
            since = self._liveness.seconds_since_contact()
            doc = {
                "status": "ready" if not problems else "not_ready",
                "problems": problems,
                "broker_last_contact_s": None if since is None else round(since, 1),
            }
        return status, json.dumps(doc, separators=(",", ":")).encode("utf-8")

    # -- the request path -----------------------------------------------------------------------

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        operation = _OPERATIONS.get(raw_path) if method == "GET" else None
        if operation is not None:
            await self._operations(operation, send)
            return
        note = _Audit(method=method[:16], path=raw_path.decode("latin-1")[:512])
        try:
            note.caller = caller_from_scope(scope)
            if self.audit_broken:
                raise AuditLogError("the audit log cannot be written; refusing requests")
            service, upstream_path = _split_path(raw_path)
            note.service = service
            allowed = self._policy().decide(note.caller, service, method, upstream_path)
            note.rule = allowed.caller.name
            self._revocations.check(service)
            self._liveness.require()
            if self._session is not None:
                self._session.require()
            svc = allowed.service
            key = QuotaKey(allowed.caller.name, service)
            limits = QuotaLimits(svc.per_minute, svc.per_hour, svc.daily_usd)
            headers, has_body = request_headers(scope["headers"], method, svc, self._limits)
            self._quotas.admit(key, limits, now=self._clock())
            fetched = False

            async def fetch(name: str) -> Credential:
                nonlocal fetched
                fetched = True
                self.metrics.cache_lookup("credentials", hit=False)
                return await self._source.fetch(name)

            credential = await self._cache.get(service, fetch)
            if not fetched:  # a hit, or a wait for another request's fetch
                self.metrics.cache_lookup("credentials", hit=True)
            headers.append(
                (
                    svc.inject_header.lower().encode("ascii"),
                    svc.header_value(credential.secret).encode("ascii"),
                )
            )
            await self._forward(
                scope, receive, send, allowed, upstream_path, headers, has_body, note, key
            )
        except DOMAIN_ERRORS as exc:
            status, head, body = _error_response(exc)
            code = _answer_of(exc)[1]
            denied = status in (403, 404, 429, 503) or isinstance(exc, AttestError)
            if status >= 500 and not isinstance(exc, DaemonError):
                _log.warning("request failed: %s", exc.reason)
            if note.responded:
                # the upstream's status line is already out: the row records the failure
                self._finish(note, "error", code, note.upstream_status or status)
            else:
                # the row is written before the caller sees the refusal
                self._finish(note, "deny" if denied else "error", code, status)
                await _respond(send, status, head, body)
        except _ClientGone:
            self._finish(note, "error", "client_disconnected", 499)
        finally:
            if not note.audited:
                self._finish(note, "error", "internal_error", 500)

    def record_refused(self, exc: Refusal) -> None:
        """Audit a connection refused before any request (caller not attested, or busy)."""
        self._finish(
            _Audit(method="-", path="-", route="connection"), "deny", exc.error, exc.status
        )

    def _finish(self, note: _Audit, decision: str, reason: str | None, status: int) -> bool:
        """Write the request's audit row (once); whether it is written."""
        if note.audited:
            return True
        note.audited = True
        seconds = time.perf_counter() - note.started
        self.metrics.request(note.route, status, seconds, None if decision == "allow" else reason)
        process = note.caller.process if note.caller is not None else None
        row = AuditRow(
            decision=decision,
            reason=reason,
            caller_uid=process.uid if process else None,
            caller_pid=process.pid if process else None,
            caller_exe=_printable_path(process.exe_path) if process else None,
            caller_exe_sha256=process.exe_sha256 if process else None,
            caller_rule=note.rule,
            actor=self._actor,
            service=note.service,
            method=note.method,
            path=note.path,
            status=status,
            upstream_status=note.upstream_status,
            prompt_tokens=note.prompt_tokens,
            completion_tokens=note.completion_tokens,
            cost_usd=note.cost_usd,
            duration_ms=seconds * 1000,
        )
        try:
            self._audit.append(row)
        except AuditLogError as exc:
            self.audit_broken = True
            _log.error("audit log append failed, refusing further requests: %s", exc.reason)
            return False
        return True

    async def _body(self, receive: Any, note: _Audit) -> AsyncIterator[bytes]:
        """The request body, streamed one chunk behind the caller.

        A chunk is passed on only once the next message is in and the total is still
        within ``max_body_bytes``: an oversized upload is refused before the upstream
        has received a body of the full allowed size (a single-message body is not
        delayed). The whole body must arrive within ``body_timeout``.
        """
        total = 0
        limits = self._limits
        held = b""
        deadline = trio.current_time() + limits.body_timeout
        while True:
            message: dict[str, Any] | None = None
            with trio.move_on_at(deadline):
                message = await receive()
            if message is None:
                raise RequestTimeout(
                    f"the request body did not arrive within {limits.body_timeout:g} s"
                )
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limits.max_body_bytes:
                limit = limits.max_body_bytes
                raise RequestTooLarge(f"request bodies are limited to {limit} bytes")
            if held:
                yield held
            held = chunk
            if not message.get("more_body", False):
                note.body_done = True
                if held:
                    yield held
                return

    async def _forward(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        allowed: Decision,
        upstream_path: str,
        headers: list[tuple[bytes, bytes]],
        has_body: bool,
        note: _Audit,
        key: QuotaKey,
    ) -> None:
        svc = allowed.service
        query: bytes = scope.get("query_string") or b""
        if query and not _QUERY.fullmatch(query):
            raise BadProxyRequest("malformed query string")
        origin = parse_origin(svc.upstream)
        target = origin.base_path + upstream_path + ("?" + query.decode("ascii") if query else "")
        body: AsyncIterator[bytes] | None = None
        if has_body:
            declared = next((v for n, v in headers if n == b"content-length"), None)
            if declared is not None and int(declared) <= self._limits.prefetch_body_bytes:
                body = _one_piece(b"".join([c async for c in self._body(receive, note)]))
            else:
                body = self._body(receive, note)
        async with self._upstream.request(
            scope["method"], origin, target, headers, body
        ) as response:
            note.upstream_status = response.status
            out = [(n, v) for n, v in response.headers if n not in _DROP_RESPONSE]
            note.responded = True
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            content_type = (response.header(b"content-type") or b"").decode("latin-1")
            scanner = UsageScanner(content_type)
            # A long stream whose caller went away is abandoned (the upstream stops
            # generating, and billing): watched only for SSE, off the common path.
            broken: str | None = "client_disconnected"
            tail = b""
            if content_type.startswith("text/event-stream") and (not has_body or note.body_done):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                    broken, tail = await _pump(response, send, scanner, svc.name, hold_last=False)
                    nursery.cancel_scope.cancel()
            else:
                # a body of known length is not a stream: its last chunk goes out with
                # the end of the response (one write less)
                sized = response.header(b"content-length") is not None
                broken, tail = await _pump(response, send, scanner, svc.name, hold_last=sized)
            self._account(scanner, svc, note, key)
            # the row is written before the caller sees the end of the response; without
            # it, the response is not completed (the connection closes mid-body)
            if not self._finish(
                note, "allow" if broken is None else "error", broken, response.status
            ):
                return
            await send({"type": "http.response.body", "body": tail, "more_body": False})

    def _account(
        self, scanner: UsageScanner, svc: ServicePolicy, note: _Audit, key: QuotaKey
    ) -> None:
        usage = scanner.result()
        if usage is None:
            return
        note.prompt_tokens = usage.prompt_tokens
        note.completion_tokens = usage.completion_tokens
        price = svc.price_for(usage.model)
        if price is not None:
            note.cost_usd = price.cost(usage.prompt_tokens, usage.completion_tokens)
            self._quotas.charge(key, note.cost_usd, now=self._clock())


async def _one_piece(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


def request_headers(
    raw: Iterable[tuple[bytes, bytes]], method: str, svc: ServicePolicy, limits: ProxyLimits
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The caller's headers as they go upstream, and whether a body follows.

    Validated (count, size, token syntax); hop-by-hop, forwarding and every credential
    header dropped (the proxy then appends the real key in ``svc.inject_header``);
    ``accept-encoding: identity`` so that usage can be read from the answer.
    """
    inject = svc.inject_header.lower().encode("ascii")
    out: list[tuple[bytes, bytes]] = []
    hop: set[bytes] = set()
    count = size = 0
    has_body = method not in _BODYLESS
    for name, value in raw:
        count += 1
        size += len(name) + len(value)
        if count > limits.max_headers or size > limits.max_header_bytes:
            raise BadProxyRequest("too many or too large headers")
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise BadProxyRequest("malformed header")
        name = name.lower()
        if name == b"connection":
            hop.update(p.strip().lower() for p in value.split(b","))
        elif name == b"content-length":
            if not value.isdigit() or int(value) > limits.max_body_bytes:
                raise RequestTooLarge(
                    f"request bodies are limited to {limits.max_body_bytes} bytes"
                )
            has_body = has_body or value != b"0"
        elif name == b"transfer-encoding":
            has_body = True
        if name in _DROP_REQUEST or name == inject:
            continue
        out.append((name, value))
    if hop:
        out = [(n, v) for n, v in out if n not in hop]
    out.append((b"accept-encoding", b"identity"))
    return out, has_body


def _printable_path(path: str) -> str:
    """``path`` as valid UTF-8 text: bytes that are not (``os.readlink`` hands them back as
    surrogates) become backslash escapes instead of failing the audit row."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _split_path(raw_path: bytes) -> tuple[str, str]:
    match = _SERVICE.fullmatch(raw_path)
    if match is None:
        raise BadProxyRequest("the path must be /<service>/<upstream path>")
    if _BAD_PATH.search(raw_path):
        raise BadProxyRequest("encoded separators, '..' and '//' are not allowed in paths")
    return match.group(1).decode("ascii"), match.group(2).decode("ascii")


async def _pump(
    response: UpstreamResponse, send: Any, scanner: UsageScanner, service: str, *, hold_last: bool
) -> tuple[str | None, bytes]:
    """Pass the upstream body on chunk by chunk.

    Returns:
        A failure reason (or None) and, with ``hold_last``, the last chunk, which the
        caller sends as the response's end; otherwise every chunk is sent on arrival.
    """
    held = b""
    try:
        async for chunk in response.chunks():
            scanner.feed(chunk)
            if held:
                await send({"type": "http.response.body", "body": held, "more_body": True})
                held = b""
            if hold_last:
                held = chunk
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamFailed as exc:
        _log.warning("%s broke the response stream: %s", service, exc.reason)
        return "upstream_stream_broken", held
    return None, held


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    head = [*headers]
    if not any(n == b"content-length" for n, _ in head):
        head.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})
