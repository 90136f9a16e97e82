"""The Prometheus metrics every agentkeys service exposes on ``GET /metrics``.

One :class:`ServiceMetrics` per service, each on its own
:class:`prometheus_client.CollectorRegistry` (never the process-wide default one), so that
several services (or tests) in one process never share a counter. The signer, broker and
worker get it through :class:`agentkeys.service.ServiceApp`; the daemon's h11 path
(``agentkeys.daemon.proxy``) holds one as well.

Cardinality is bounded and nothing identifies a secret or an agent: labels are route
*names* (the route table's keys, never a raw path), HTTP statuses, registered error codes
(``agentkeys.error_codes``) and cache names chosen in code. No
token, key, actor omni, wallet or caller identity is ever a label or a value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = [
    "METRICS_CONTENT_TYPE",
    "STORE_ERROR_CODES",
    "UNMATCHED_ROUTE",
    "CacheCounts",
    "ServiceMetrics",
]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Prometheus text exposition format prometheus_client writes (``version=1.0.0``)."""

UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request no route matched (404/405): the raw path is never a label."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


STORE_ERROR_CODES = frozenset(
    {"store_error", "key_store_error", "storage_failed", "storage_unavailable", "storage_denied"}
)
"""Error codes that mean a store failed (state store, key store, object store): each answer
with one of them is also counted in ``agentkeys_store_errors_total``."""

CacheCounts = Callable[[], tuple[int, int]]
"""Returns a cache's ``(hits, misses)`` since start, read at scrape time."""


class _CacheCollector(Collector):
    """``agentkeys_cache_lookups_total``: lookups counted here plus caches that count their own."""

    def __init__(self) -> None:
        self.counted: dict[str, list[int]] = {}
        self.sources: dict[str, CacheCounts] = {}

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "agentkeys_cache_lookups",
            "Cache lookups, by cache and result (hit or miss).",
            labels=("cache", "result"),
        )
        counts = {name: (hits, misses) for name, (hits, misses) in self.counted.items()}
        counts.update((name, read()) for name, read in self.sources.items())
        for name, (hits, misses) in sorted(counts.items()):
            family.add_metric((name, "hit"), hits)
            family.add_metric((name, "miss"), misses)
        yield family


class ServiceMetrics:
    """The metric families of one service, on a registry of its own.

    Args:
        service: the service's name (``signer``, ``broker``, ``worker``, ``daemon``), the
            label of ``agentkeys_service_info``.

    Families (all prefixed ``agentkeys_``):

    * ``http_requests_total{route,status}`` — every answered request;
    * ``http_request_duration_seconds{route}`` — time to the answer (histogram);
    * ``denials_total{error}`` — every request answered ``{error, reason}``, by error code;
    * ``store_errors_total{error}`` — failures of a store (:data:`STORE_ERROR_CODES`);
    * ``cache_lookups_total{cache,result}`` — ``result`` is ``hit`` or ``miss``;
    * ``heartbeat_age_seconds`` — seconds since the broker last answered (the daemon only;
      -1 before the first answer);
    * ``chain_head_lag_blocks`` — chain head minus the last block applied (where a service
      follows the chain; -1 while not following);
    * ``service_info{service}`` — always 1.
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
        self._store_errors = Counter(
            "agentkeys_store_errors",
            "Failed state-store, key-store or object-store operations, by error code.",
            ("error",),
            registry=registry,
        )
        self._caches = _CacheCollector()
        registry.register(self._caches)
        info = Gauge("agentkeys_service_info", "Always 1.", ("service",), registry=registry)
        info.labels(service=service).set(1)

    # -- recording --------------------------------------------------------------------------

    def request(self, route: str, status: int, seconds: float | None, error: str | None) -> None:
        """Count one answered request, its latency (unless ``None``) and its error code."""
        self._requests.labels(route=route, status=str(status)).inc()
        if seconds is not None:
            self._latency.labels(route=route).observe(seconds)
        if error is not None:
            self._denials.labels(error=error).inc()
            if error in STORE_ERROR_CODES:
                self.store_error(error)

    def store_error(self, error: str) -> None:
        """Count one failed store operation outside a request (e.g. a purge), by its code."""
        self._store_errors.labels(error=error).inc()

    def cache_lookup(self, cache: str, *, hit: bool) -> None:
        """Count one lookup of ``cache``."""
        counts = self._caches.counted.setdefault(cache, [0, 0])
        counts[0 if hit else 1] += 1

    def cache_counts_from(self, cache: str, read: CacheCounts) -> None:
        """Report ``cache``'s own ``(hits, misses)`` counters, read at scrape time."""
        self._caches.sources[cache] = read

    def heartbeat_age_from(self, read: Callable[[], float | None]) -> None:
        """Add ``heartbeat_age_seconds``, read at scrape time (``read``: ``None`` = never)."""
        gauge = Gauge(
            "agentkeys_heartbeat_age_seconds",
            "Seconds since the broker last answered a heartbeat (-1: never).",
            registry=self.registry,
        )
        gauge.set_function(lambda: _or_unknown(read()))

    def chain_lag_from(self, read: Callable[[], float | None]) -> None:
        """Add ``chain_head_lag_blocks``, read at scrape time (``read``: ``None`` = unknown)."""
        gauge = Gauge(
            "agentkeys_chain_head_lag_blocks",
            "Chain head minus the last block whose events are applied (-1: not following).",
            registry=self.registry,
        )
        gauge.set_function(lambda: _or_unknown(read()))

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _or_unknown(value: float | None) -> float:
    return -1.0 if value is None else float(value)
