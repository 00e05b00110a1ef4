"""Counters of what the cache did, kept per process and aggregated across processes.

Counters are flat names (``hits``, ``by_tier.redis``, ``by_match.exact``); :func:`nest` turns
them into the nested shape that ``cache.stats()`` and ``imgcache stats --json`` show. Every
increment also accrues in a pending delta that :meth:`Stats.flush` adds to a shared counter
store (the Redis hash, or the local directory's stats file), so that ``imgcache stats``
shows the figures of every process that shares it; :meth:`TieredStore.namespaces
<imgcache.store.tiered.TieredStore.namespaces>` finds every namespace that has such counters
(the proxy's per-key tenants among them), and :func:`add_up` sums their figures.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .manifest import MATCHES

TIERS = ("memory", "disk", "redis", "s3")
_TOP = (
    "requests", "hits", "misses", "upstream_calls", "upstream_errors", "coalesced",
    "stored", "uncacheable", "unreadable_images", "bypassed", "corrupt", "saved_usd", "spent_usd", "saved_seconds",
)
DESCRIPTIONS = {
    "requests": "calls that went through the cache",
    "hits": "answered from the cache (any tier or match, or by waiting for an identical call)",
    "misses": "not found in any tier",
    "upstream_calls": "calls made to the wrapped function or API",
    "upstream_errors": "upstream calls that raised (propagated, never cached)",
    "coalesced": "identical concurrent calls answered by another caller's upstream call",
    "stored": "results stored",
    "uncacheable": "results returned uncached because they could not be stored faithfully",
    "unreadable_images": "vision calls passed through uncached: an input image could not be read",
    "bypassed": "calls passed through on request (streaming, cache switched off)",
    "corrupt": "stored entries or blobs that failed their digest or did not parse",
    "saved_usd": "list price of the upstream calls the hits avoided",
    "spent_usd": "list price of the upstream calls made",
    "saved_seconds": "upstream time the hits avoided",
}


def empty() -> dict[str, float]:
    counters = dict.fromkeys(_TOP, 0.0)
    counters.update({f"by_tier.{t}": 0.0 for t in TIERS})
    counters.update({f"by_match.{m}": 0.0 for m in MATCHES})
    return counters


def counter_value(value: object) -> float | None:
    """A stored counter as a float (from a number, or the bytes Redis answers); None for
    anything else, infinities and NaN included: a garbage field, skipped or reset."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def nest(flat: Mapping[str, float]) -> dict[str, Any]:
    """``{"by_tier.redis": 3.0}`` -> ``{"by_tier": {"redis": 3}}``; whole numbers as ints.
    A name that clashes with a counter or a group (``hits.x``, a plain ``by_tier``: only a
    hand-written field of a shared store can) is left out."""
    merged = {**empty(), **flat}
    groups = {name.partition(".")[0] for name in merged if "." in name} - set(_TOP)
    out: dict[str, Any] = {}
    for name, value in sorted(merged.items()):
        group, _, leaf = name.partition(".")
        if (leaf and group in _TOP) or (not leaf and name in groups):
            continue
        number: float | int = round(value, 6) if name.endswith(("_usd", "_seconds")) else int(value)
        if leaf:
            out.setdefault(group, {})[leaf] = number
        else:
            out[name] = number
    return out


class Stats:
    """Thread-safe counters for one cache object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = empty()
        self._pending: dict[str, float] = {}
        self.watchers: list[Callable[[Mapping[str, float]], None]] = []
        """Called with each ``add``'s deltas (the proxy's Prometheus counters); never raise."""

    def add(self, deltas: Mapping[str, float]) -> None:
        """``add({"hits": 1, "by_tier.redis": 1})``."""
        with self._lock:
            totals, pending = self._totals, self._pending
            for name, delta in deltas.items():
                totals[name] = totals.get(name, 0.0) + delta
                pending[name] = pending.get(name, 0.0) + delta
        for watcher in self.watchers:
            watcher(deltas)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._totals)

    def take_pending(self) -> dict[str, float]:
        """The deltas not yet added to the shared counters; they are the caller's now."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def restore_pending(self, pending: Mapping[str, float]) -> None:
        """Deltas that could not be added: pending again, for the next flush."""
        with self._lock:
            for name, delta in pending.items():
                self._pending[name] = self._pending.get(name, 0.0) + delta


# -- every namespace of a shared store ---------------------------------------------------

NAMESPACE_LIMIT = 10_000
"""``imgcache stats`` shows at most this many namespaces (and says when there are more)."""


def add_up(figures: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The counters of several namespaces' figures (``cache.stats()`` dicts) summed, in the
    same nested shape: numbers and groups of numbers (``by_tier``, ``tier_errors``,
    ``prewarm``); lists and names are left out."""
    total: dict[str, Any] = {}
    for one in figures:
        _add_into(total, one)
    return total


def _add_into(total: dict[str, Any], figures: Mapping[str, Any]) -> None:
    for name, value in figures.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            summed = total.get(name, 0) + value
            total[name] = round(summed, 6) if isinstance(summed, float) else summed
        elif isinstance(value, Mapping) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            _add_into(total.setdefault(name, {}), value)
