"""Prometheus metrics of one proxy app (served at ``/metrics``).

| metric | labels | what |
| --- | --- | --- |
| ``imgcache_proxy_requests_total`` | endpoint, outcome | requests answered: outcome ``hit``, ``miss``, ``bypass`` (forwarded uncached) or ``error`` (upstream error relayed, upstream down, refused) |
| ``imgcache_proxy_hits_total`` | endpoint, tier, match | hits by the slowest tier that served them and by match (exact, semantic, perceptual) |
| ``imgcache_proxy_request_seconds`` | endpoint, outcome | time from the request to the end of the answer |
| ``imgcache_proxy_upstream_seconds`` | endpoint | time the upstream took to answer (to its headers, for a streamed answer) |
| ``imgcache_proxy_in_flight`` | | requests being answered |
| ``imgcache_proxy_namespaces`` | | namespaces with a cache object open |
| ``imgcache_saved_usd_total`` | | list price of the upstream calls that hits avoided |
| ``imgcache_spent_usd_total`` | | list price of the upstream calls made |
| ``imgcache_budget_used_usd`` | namespace | spent and held in the budget's window (``_shared`` for a shared budget; the open namespaces, at most 100) |
| ``imgcache_budget_limit_usd`` | namespace | the budget's limit |
| ``imgcache_budget_refused_total`` | | misses refused over budget (429 ``budget_exceeded``) |
| ``imgcache_budget_warnings_total`` | | budget windows that reached their warning level |
| ``imgcache_upstream_429_total`` | | 429s the upstream answered |
| ``imgcache_rate_queued_total`` | | misses that waited their turn under the rate limits: 429s avoided |
| ``imgcache_rate_refused_total`` | | misses whose turn was beyond the queue timeout (429 ``rate_limit_exceeded``) |
| ``imgcache_rate_wait_seconds_total`` | | time misses spent waiting their turn |
| ``imgcache_tier_errors_total`` | tier | tier failures (each trips the tier's breaker) |
| ``imgcache_tier_up`` | tier | 1 while the tier's breaker is closed, 0 while it is open |

Endpoints are a fixed set (``images.generations``, ``images.edits``, ``chat.completions``,
``responses``, ``forward`` for every other upstream path, ``proxy`` for the proxy's own), so
label values stay few whatever callers send.

Two modes, chosen by prometheus_client itself when it is first imported:

* **one process** (``imgcache serve``, :class:`~imgcache.proxy.server.ProxyServer`): each app
  has a registry of its own (several apps in one process never mix their counts) and
  ``/metrics`` reads it.
* **multiprocess** (``imgcache serve --workers N``: :func:`~imgcache.proxy.server.serve` sets
  ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, or the operator did): every worker
  writes its values to files in that directory and ``/metrics``, whichever worker answers it,
  reads them all (``MultiProcessCollector``): counters and histograms are summed over the
  workers, dead ones included (totals never go down); the gauges over the live workers only
  (``livesum``: a worker's in-flight requests and open namespaces leave with it, by
  :meth:`Metrics.close` at its shutdown or :func:`sweep_dead` at the next worker's start).
  ``imgcache_proxy_namespaces`` then counts cache objects: a namespace open in two workers
  counts twice.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from ..cache import Cache

log = logging.getLogger("imgcache.proxy")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_BUDGET_SERIES = 100
"""Budget gauges are labelled by namespace; at most this many at once (per process)."""
OUTCOMES = ("hit", "miss", "bypass", "error")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0)
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode if this process is in it (the
    variable was set when prometheus_client was first imported), else None."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


def sweep_dead(path: str) -> list[int]:
    """Drop the live gauges of processes that are gone without :meth:`Metrics.close` (a worker
    killed, or restarted by uvicorn's supervisor): their in-flight requests are not in flight."""
    from prometheus_client.multiprocess import mark_process_dead

    dead = []
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        found = _LIVE_GAUGE_FILE.fullmatch(os.path.basename(name))
        if found is None:
            continue
        pid = int(found.group(1))
        if pid == os.getpid() or pid in dead:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(pid)
        except OSError:  # alive, another user's
            continue
    for pid in dead:
        mark_process_dead(pid, path)
    return dead


_COUNTERS = {  # a cache counter (imgcache.stats) -> (metric name, help)
    "saved_usd": ("imgcache_saved_usd", "List price of the upstream calls that hits avoided (USD)"),
    "spent_usd": ("imgcache_spent_usd", "List price of the upstream calls made (USD)"),
    "budget.refused": ("imgcache_budget_refused", "Misses refused over budget"),
    "budget.warnings": ("imgcache_budget_warnings", "Budget windows that reached their warning level"),
    "rate.upstream_429": ("imgcache_upstream_429", "429s the upstream answered"),
    "rate.queued": ("imgcache_rate_queued", "Misses that waited their turn under the rate limits (429s avoided)"),
    "rate.refused": ("imgcache_rate_refused", "Misses whose turn was beyond the queue timeout"),
    "rate.waited_seconds": ("imgcache_rate_wait_seconds", "Time misses spent waiting their turn"),
}


class Metrics:
    """The proxy's metrics. ``caches``: the cache objects open (one per namespace), read at
    each scrape (one process) or after each request and at each scrape (multiprocess: each
    worker writes its own); ``base``: the proxy's cache, whose counters hold the tier errors.
    :meth:`watch` makes a cache's counters count here too."""

    def __init__(self, caches: Callable[[], list[Cache]] = list, *, base: Cache | None = None) -> None:
        self._caches = caches
        self._base = base
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("imgcache_proxy_requests", "Requests answered by the proxy",
                                ("endpoint", "outcome"), registry=self.registry)
        self.hits = Counter("imgcache_proxy_hits", "Cache hits by tier and match",
                            ("endpoint", "tier", "match"), registry=self.registry)
        self.latency = Histogram("imgcache_proxy_request_seconds", "Time to answer a request",
                                 ("endpoint", "outcome"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.upstream = Histogram("imgcache_proxy_upstream_seconds", "Time the upstream took to answer",
                                  ("endpoint",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("imgcache_proxy_in_flight", "Requests being answered", registry=self.registry,
                               multiprocess_mode="livesum")
        self.namespaces = Gauge("imgcache_proxy_namespaces", "Namespaces with a cache object open",
                                registry=self.registry, multiprocess_mode="livesum")
        self.counted = {stat: Counter(name, text, registry=self.registry) for stat, (name, text) in _COUNTERS.items()}
        self.tier_errors = Counter("imgcache_tier_errors", "Tier failures", ("tier",), registry=self.registry)
        self.tier_up = Gauge("imgcache_tier_up", "1 while the tier's breaker is closed", ("tier",),
                             registry=self.registry, multiprocess_mode="livemin")
        self.budget_used = Gauge("imgcache_budget_used_usd", "Spent and held in the budget's window (USD)",
                                 ("namespace",), registry=self.registry, multiprocess_mode="mostrecent")
        self.budget_limit = Gauge("imgcache_budget_limit_usd", "The budget's limit (USD)", ("namespace",),
                                  registry=self.registry, multiprocess_mode="mostrecent")
        self._budget_labels: set[str] = set()
        if base is not None:
            self.watch(base)
        if self.multiprocess_dir is None:
            self._exposed = self.registry
        else:
            from prometheus_client.multiprocess import MultiProcessCollector

            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=self.multiprocess_dir)
            swept = sweep_dead(self.multiprocess_dir)
            if swept:
                log.info("imgcache proxy: metrics of gone workers %s no longer live", swept)

    @property
    def multiprocess(self) -> bool:
        return self.multiprocess_dir is not None

    def observe_upstream(self, endpoint: str, seconds: float) -> None:
        self.upstream.labels(endpoint).observe(seconds)

    def answered(self, endpoint: str, outcome: str, seconds: float, tier: str | None = None,
                 match: str | None = None) -> None:
        self.requests.labels(endpoint, outcome).inc()
        self.latency.labels(endpoint, outcome).observe(seconds)
        if outcome == "hit" and tier is not None:
            self.hits.labels(endpoint, tier, match or "exact").inc()

    def watch(self, cache: Cache) -> None:
        """Count ``cache``'s counters (dollars, budget, rate, tier errors) here as they change."""
        cache.stats_counters.watchers.append(self._record)

    def _record(self, deltas: Mapping[str, float]) -> None:
        for name, delta in deltas.items():
            if delta <= 0:
                continue
            counter = self.counted.get(name)
            if counter is not None:
                counter.inc(delta)
            elif name.startswith("tier_errors."):
                self.tier_errors.labels(name.removeprefix("tier_errors.")).inc(delta)

    def settled(self) -> None:
        """After a request: in multiprocess mode, write this worker's gauges (a function gauge
        would be read only by the process that is scraped)."""
        if self.multiprocess_dir is not None:
            self._refresh()

    def _refresh(self) -> None:
        """The gauges, read from the open caches: namespaces, tiers up, budgets."""
        caches = self._caches()
        self.namespaces.set(len(caches))
        for name, state in (self._base.store.health() if self._base is not None else {}).items():
            self.tier_up.labels(name).set(1 if state == "up" else 0)
        budgets = {cache.spending.owner: cache.spending for cache in caches if cache.spending is not None}
        for gone in self._budget_labels - budgets.keys():  # a namespace closed: its series go
            self._budget_labels.discard(gone)
            for gauge in (self.budget_used, self.budget_limit):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        for owner, spending in budgets.items():
            if owner not in self._budget_labels and len(self._budget_labels) >= MAX_BUDGET_SERIES:
                continue  # per-key tenants are callers' keys: a bounded number of series
            self._budget_labels.add(owner)
            self.budget_used.labels(owner).set(spending.last_used())
            self.budget_limit.labels(owner).set(spending.budget.usd)

    def exposition(self) -> tuple[bytes, str]:
        self._refresh()
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """At the app's shutdown: in multiprocess mode this process's gauges stop counting
        (its counters and histograms stay in the sums)."""
        if self.multiprocess_dir is None:
            return
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid(), self.multiprocess_dir)
