"""The Prometheus metrics every agentkeys service exposes on ``GET /metrics``.

One :class:`ServiceMetrics` per service, each on its own
:class:`prometheus_client.CollectorRegistry` (never the process-wide default one), so that
several services (or tests) in one process never share a counter. The signer, broker and
worker get it through :class:`agentkeys.service.ServiceApp`; the daemon's h11 path
(``agentkeys.daemon.proxy``) holds one as well.

Cardinality is bounded and nothing identifies a secret or an agent: labels are route
*names* (the route table's keys, never a raw path), HTTP statuses, registered error codes
(``agentkeys.error_codes``), cache names and store operation names chosen in code. No
token, key, actor omni, wallet or caller identity is ever a label or a value.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["METRICS_CONTENT_TYPE", "UNMATCHED_ROUTE", "ServiceMetrics"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Prometheus text exposition format (0.0.4)."""

UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request no route matched (404/405): the raw path is never a label."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """The metric families of one service, on a registry of its own.

    Args:
        service: the service's name (``signer``, ``broker``, ``worker``, ``daemon``), the
            label of ``agentkeys_service_info``.

    Families (all prefixed ``agentkeys_``):

    * ``http_requests_total{route,status}`` — every answered request;
    * ``http_request_duration_seconds{route}`` — handler latency (histogram);
    * ``denials_total{error}`` — every request answered ``{error, reason}``, by error code;
    * ``cache_lookups_total{cache,result}`` — ``result`` is ``hit`` or ``miss``;
    * ``store_errors_total{operation}`` — a state store (or object store) failed;
    * ``heartbeat_age_seconds`` — seconds since the broker last answered (daemon);
    * ``chain_head_lag_blocks`` — chain head minus the block the service has synced through.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._requests = Counter(
            "agentkeys_http_requests",
            "Requests answered, by route name and HTTP status.",
            ("route", "status"),
            registry=registry,
        )
        self._latency = Histogram(
            "agentkeys_http_request_duration_seconds",
            "Time from the request's arrival to its answer, by route name.",
            ("route",),
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self._denials = Counter(
            "agentkeys_denials",
            "Requests answered with an {error, reason} body, by error code.",
            ("error",),
            registry=registry,
        )
        self._cache = Counter(
            "agentkeys_cache_lookups",
            "Cache lookups, by cache and result (hit or miss).",
            ("cache", "result"),
            registry=registry,
        )
        self._store_errors = Counter(
            "agentkeys_store_errors",
            "Failed state-store or object-store operations, by operation.",
            ("operation",),
            registry=registry,
        )
        self._heartbeat_age = Gauge(
            "agentkeys_heartbeat_age_seconds",
            "Seconds since the broker last answered a heartbeat (-1: never).",
            registry=registry,
        )
        self._heartbeat_age.set(-1)
        self._chain_lag = Gauge(
            "agentkeys_chain_head_lag_blocks",
            "Chain head minus the last block this service has synced through (-1: unknown).",
            registry=registry,
        )
        self._chain_lag.set(-1)
        self._info = Gauge(
            "agentkeys_service_info", "Always 1; names the service.", ("service",),
            registry=registry,
        )  # fmt: skip
        self._info.labels(service=service).set(1)

    # -- recording --------------------------------------------------------------------------

    def request(self, route: str, status: int, seconds: float | None, error: str | None) -> None:
        """Count one answered request, its latency (unless ``None``) and its error code."""
        self._requests.labels(route=route, status=str(status)).inc()
        if seconds is not None:
            self._latency.labels(route=route).observe(seconds)
        if error is not None:
            self._denials.labels(error=error).inc()

    def cache_lookup(self, cache: str, *, hit: bool) -> None:
        """Count one lookup of ``cache``."""
        self._cache.labels(cache=cache, result="hit" if hit else "miss").inc()

    def store_error(self, operation: str) -> None:
        """Count one failed store operation."""
        self._store_errors.labels(operation=operation).inc()

    def heartbeat_age_from(self, read: Callable[[], float | None]) -> None:
        """Read the heartbeat age at scrape time from ``read`` (``None``: never reached)."""
        self._heartbeat_age.set_function(lambda: _or_unknown(read()))

    def chain_lag_from(self, read: Callable[[], int | None]) -> None:
        """Read the chain head lag at scrape time from ``read`` (``None``: unknown)."""
        self._chain_lag.set_function(lambda: _or_unknown(read()))

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _or_unknown(value: float | None) -> float:
    return -1.0 if value is None else float(value)
