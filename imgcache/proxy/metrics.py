"""Prometheus metrics of one proxy app, in a registry of its own (served at ``/metrics``).

| metric | labels | what |
| --- | --- | --- |
| ``imgcache_proxy_requests_total`` | endpoint, outcome | requests answered: outcome ``hit``, ``miss``, ``bypass`` (forwarded uncached) or ``error`` (upstream error relayed, upstream down, refused) |
| ``imgcache_proxy_hits_total`` | endpoint, tier, match | hits by the slowest tier that served them and by match (exact, semantic, perceptual) |
| ``imgcache_proxy_request_seconds`` | endpoint, outcome | time from the request to the end of the answer |
| ``imgcache_proxy_upstream_seconds`` | endpoint | time the upstream took to answer (to its headers, for a streamed answer) |
| ``imgcache_proxy_in_flight`` | | requests being answered |
| ``imgcache_proxy_namespaces`` | | namespaces with a cache object open |

Endpoints are a fixed set (``images.generations``, ``images.edits``, ``chat.completions``,
``responses``, ``forward`` for every other upstream path, ``proxy`` for the proxy's own), so
label values stay few whatever callers send.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

OUTCOMES = ("hit", "miss", "bypass", "error")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self, namespaces: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("imgcache_proxy_requests", "Requests answered by the proxy",
                                ("endpoint", "outcome"), registry=self.registry)
        self.hits = Counter("imgcache_proxy_hits", "Cache hits by tier and match",
                            ("endpoint", "tier", "match"), registry=self.registry)
        self.latency = Histogram("imgcache_proxy_request_seconds", "Time to answer a request",
                                 ("endpoint", "outcome"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.upstream = Histogram("imgcache_proxy_upstream_seconds", "Time the upstream took to answer",
                                  ("endpoint",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("imgcache_proxy_in_flight", "Requests being answered", registry=self.registry)
        self.namespaces = Gauge("imgcache_proxy_namespaces", "Namespaces with a cache object open",
                                registry=self.registry)
        self.namespaces.set_function(namespaces)

    def observe_upstream(self, endpoint: str, seconds: float) -> None:
        self.upstream.labels(endpoint).observe(seconds)

    def answered(self, endpoint: str, outcome: str, seconds: float, tier: str | None = None,
                 match: str | None = None) -> None:
        self.requests.labels(endpoint, outcome).inc()
        self.latency.labels(endpoint, outcome).observe(seconds)
        if outcome == "hit" and tier is not None:
            self.hits.labels(endpoint, tier, match or "exact").inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
