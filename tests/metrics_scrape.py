"""Reading a ``/metrics`` scrape in tests, with prometheus_client's own text parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agentkeys.service import METRICS_CONTENT_TYPE

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the scrape has no such sample (a counter never touched)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    """``GET /metrics`` through ``client``: it must answer 200 in the Prometheus text format."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == METRICS_CONTENT_TYPE
    return parse(response.text)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one sample grew from ``before`` to ``after``."""
    return value(after, name, **labels) - value(before, name, **labels)
