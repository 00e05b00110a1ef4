"""The cache front: the one way in for every adapter (the decorator, ``wrap``, the proxy,
prewarm, the CLI).

Policy lives here: which tiers exist, TTL and its renewal on hits, single-flight, what is
counted, the per-call options (``lookup``/``store``, semantic and perceptual matching), and
the events the layers above listen to (``on_stored``). Finding answers is
:mod:`imgcache._lookup`'s job, the stored format :mod:`imgcache.manifest`'s, waiting for a
call in flight :mod:`imgcache.flight`'s, and the bytes :mod:`imgcache.store`'s.
:meth:`Cache.fetch` and :meth:`Cache.afetch` are twins over the same helpers; only their
waiting and I/O differ.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import codec
from . import manifest as manifests
from ._calls import Calls, Cost, as_stored, identity
from ._config import cache_config_from_env
from ._files import DEFAULT_FILE_MODE, check_file_mode, write_file
from ._lookup import PERCEPTUAL_ON, SEMANTIC_ON, Lookup
from ._vocabulary import check_namespace
from .errors import ConfigError
from .flight import SharedLocks
from .manifest import Hit
from .match.config import SemanticOptions, VisionOptions
from .request import Request
from .request_log import RequestLog
from .spend.config import Budget, RateLimits
from .stats import Stats, nest
from .store.tiered import open_store

if TYPE_CHECKING:
    from .invalidation import Invalidations
    from .match.perceptual import PerceptualMatcher
    from .match.semantic import SemanticMatcher
    from .spend.shaping import Shaping
    from .spend.spending import Spending
    from .store.claims import GuardedClaims
    from .store.ledger import GuardedLedger
    from .store.prune import PruneReport
    from .store.rate import SharedBuckets

log = logging.getLogger("imgcache")
T = TypeVar("T")
MiB = 1 << 20

def default_directory() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("imgcache", appauthor=False))


class Cache:
    """A three-tier, content-addressed cache for image-generation and vision calls.

    With neither ``redis_url`` nor ``s3_bucket`` it runs embedded, on memory plus a local
    directory (``directory``, by default the user's cache directory) that persists across
    runs. With Redis and/or S3 it shares entries with every process that uses them; a local
    directory is then used only when ``directory`` is given.

    ``budget`` (an :class:`imgcache.Budget`) limits what misses may spend upstream, and
    ``rate_limits`` (:class:`imgcache.RateLimits`) how fast they go, each shared by every
    process of the store (see :mod:`imgcache.spend`).

    Local files are private to their user: created with ``file_mode`` (default ``0o600``),
    directories with the matching mode (``0o700``); ``0o640`` shares them with the group.

    ``on_stored`` holds listeners called with (request, manifest) after each result that an
    upstream call made is stored; the request log (``imgcache prewarm --from-history``) is one.
    """

    def __init__(
        self,
        namespace: str = "default",
        *,
        redis_url: str | None = None,
        s3_bucket: str | None = None,
        s3_endpoint_url: str | None = None,
        s3_prefix: str = "imgcache/",
        directory: str | os.PathLike[str] | None = None,
        memory_bytes: int = 256 * MiB,
        ttl: float | None = None,
        semantic: bool | SemanticOptions = True,
        vision: VisionOptions | None = None,
        redis_max_blob_bytes: int | None = None,
        lock_timeout: float = 10.0,
        wait_timeout: float = 600.0,
        stats_interval: float = 1.0,
        file_mode: int = DEFAULT_FILE_MODE,
        budget: Budget | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.namespace = check_namespace(namespace)
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError(f"budget must be an imgcache.Budget, not {type(budget).__name__}")
        self.budget = budget
        if rate_limits is not None and not isinstance(rate_limits, RateLimits):
            raise ConfigError(f"rate_limits must be an imgcache.RateLimits, not {type(rate_limits).__name__}")
        self.rate_limits = rate_limits
        self.file_mode = check_file_mode(file_mode)
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be positive seconds or None, not {ttl!r}")
        if memory_bytes < 0:
            raise ConfigError("memory_bytes must be >= 0")
        self.ttl = ttl
        self.memory_bytes = memory_bytes
        self.wait_timeout = wait_timeout
        self.stats_interval = stats_interval
        self.stats_counters = Stats()
        self.directory: Path | None = None
        if directory is not None or (redis_url is None and s3_bucket is None):
            self.directory = Path(directory) if directory is not None else default_directory()
        self.store = open_store(self.stats_counters, memory_bytes=memory_bytes, directory=self.directory,
                                redis_url=redis_url, s3_bucket=s3_bucket, s3_endpoint_url=s3_endpoint_url,
                                s3_prefix=s3_prefix, file_mode=file_mode,
                                redis_max_blob_bytes=redis_max_blob_bytes)
        self._locks = SharedLocks(self.store, lock_timeout)
        self._owns_store = True
        self._start(SemanticOptions() if semantic is True else semantic or None, vision or VisionOptions())

    def _start(self, semantic: SemanticOptions | None, vision: VisionOptions) -> None:
        """What is this namespace's own: its reads, flights, counters' thread and events."""
        longest = None if self.ttl is None else self.ttl * manifests.TTL_EXTENSION_CAP
        self._lookup = Lookup(self.namespace, self.store, self.stats_counters, semantic=semantic,
                              vision=vision, sync_interval=self.stats_interval, max_age=longest)
        self.spending = None if self.budget is None else self._spending(self.budget)
        self.shaping = None if self.rate_limits is None else self._shaping(self.rate_limits)
        self._calls = Calls(self.namespace, self.store, self.stats_counters, self._lookup, self._locks,
                            ttl=self.ttl, wait_timeout=self.wait_timeout, touched=self._ensure_stats_thread,
                            spending=self.spending, shaping=self.shaping)
        self.request_log = RequestLog(self.store, self.namespace)
        self.on_stored = self._calls.on_stored
        self.on_stored.append(self.request_log.record)
        self._closed = False
        self._stats_stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        _live_caches.add(self)

    def _spending(self, budget: Budget) -> Spending:
        from .spend.spending import Spending

        owner = self.namespace if budget.scope == "namespace" else "_shared"
        return Spending(budget, owner, self.store.ledger(owner), self.stats_counters)

    def _shaping(self, limits: RateLimits) -> Shaping:
        from .spend.limiter import ACCOUNT
        from .spend.shaping import Shaping

        return Shaping(limits, self.store.rate_buckets(self.namespace, ACCOUNT), self.stats_counters)

    @classmethod
    def from_env(cls, **overrides: Any) -> Cache:
        """A cache configured from ``IMGCACHE_*`` environment variables; keyword arguments win."""
        return cls(**{**cache_config_from_env(os.environ), **overrides})

    def __repr__(self) -> str:
        return f"<Cache {self.namespace!r} tiers={self.store.tier_names}>"

    def for_namespace(self, namespace: str) -> Cache:
        """A cache of another namespace over this one's tiers: the same connections, memory
        budget and configuration; its own entries, matchers, flights and counters (tier
        faults are counted in this cache's). Closing it leaves the tiers open: they close
        with this cache, which must outlive it."""
        view = copy.copy(self)
        view.namespace = check_namespace(namespace)
        view.stats_counters = Stats()
        view._owns_store = False
        view._start(self._lookup.semantic_options, self._lookup.vision_options)
        return view

    # -- reading without calling upstream -------------------------------------------------------

    def lookup(self, request: Request, *, near: bool = False) -> Hit | None:
        """The stored entry for a request, or None; no stats, no upstream call. With ``near``
        also a verified semantic or perceptual match, stored under the request's key as a
        live lookup would (ImageError if an input image cannot be read)."""
        return self._lookup.get(request.key) or (self._lookup.near(request) if near else None)

    def entry(self, key: str) -> Hit | None:
        """The entry stored under a request key, unless its result was invalidated; no stats
        (what the proxy's file URLs serve)."""
        return self._lookup.get(key)

    def contains(self, request: Request) -> bool:
        """Whether the request's entry is stored (manifests only: no blob is read)."""
        return self._lookup.contains(request.key)

    def contains_key(self, key: str) -> bool:
        """:meth:`contains` for a request key (prewarm's claims and the request log hold keys)."""
        return self._lookup.contains(key)

    # -- the path of one call ----------------------------------------------------------------

    def fetch(self, request: Request, upstream: Callable[[], T], *, to_storable: Callable[[T], Any] = identity,
              from_storable: Callable[[Any, Hit], T] = as_stored, cost_usd: Cost[T] = None,
              estimate_usd: float | Callable[[], float | None] | None = None, lookup: bool = True,
              store: bool = True) -> T:
        """Answer ``request`` from the cache, or call ``upstream`` once and store its result.

        ``to_storable`` turns an upstream result into JSON data with bytes inside (see
        :mod:`imgcache.codec`) and may raise UnstorableResult; ``from_storable`` rebuilds the
        caller's type from that data on a hit; ``cost_usd`` is a number or a function of the
        upstream result, and ``estimate_usd`` what the budget reserves before the call when
        ``cost_usd`` is a function (a number, or a function asked just before the call; a
        call with no estimate is charged its cost after it). ``lookup=False`` (HTTP's no-cache) calls upstream without
        looking and stores the answer; ``store=False`` (no-store) looks up the exact key only
        and writes nothing. Upstream errors propagate unchanged; BudgetExceeded when the call
        would pass the budget (raised before it).
        """
        return self._calls.fetch(request, upstream, to_storable=to_storable, from_storable=from_storable,
                                 cost_usd=cost_usd, estimate_usd=estimate_usd, lookup=lookup, store=store)

    async def afetch(self, request: Request, upstream: Callable[[], Awaitable[T]], *,
                     to_storable: Callable[[T], Any] = identity,
                     from_storable: Callable[[Any, Hit], T] = as_stored, cost_usd: Cost[T] = None,
                     estimate_usd: float | Callable[[], float | None] | None = None, lookup: bool = True,
                     store: bool = True) -> T:
        """The twin of :meth:`fetch` for coroutines: tier I/O runs in worker threads."""
        return await self._calls.afetch(request, upstream, to_storable=to_storable, from_storable=from_storable,
                                        cost_usd=cost_usd, estimate_usd=estimate_usd, lookup=lookup, store=store)

    def store_result(self, request: Request, storable: Any, *, cost_usd: float | None = None,
                     elapsed: float = 0.0, ttl: float | None = None) -> bool:
        """Store a result given as storable data (see :mod:`imgcache.codec`); False, with an
        :class:`UncachedResultWarning`, when it cannot be stored faithfully."""
        return self._calls.store_result(request, storable, cost_usd=cost_usd, elapsed=elapsed, ttl=ttl)

    def delete(self, request: Request) -> None:
        """Invalidate a request's result: its entry goes from every tier (its blobs stay:
        others may share them), and every process stops serving copies of it, the aliases
        semantic and perceptual matches made of it included (see :mod:`imgcache.invalidation`).
        The request asked again is answered anew."""
        self._lookup.invalidate(request.key)

    def url_for(self, data: bytes, manifest: Mapping[str, Any]) -> str:
        """A URL that serves ``data`` for the entry's lifetime: presigned S3 where S3 is
        configured, otherwise a ``file://`` URL in the local directory."""
        remaining = manifest.get("max_expires") or manifest.get("expires")
        lifetime = 7 * 86400 if remaining is None else max(1, int(remaining - time.time()))
        url = self.store.blob_url(self.namespace, data, lifetime)
        if url is None:  # no tier gives URLs (Redis alone): a private file of this user's
            path = default_directory() / "urls" / self.namespace / codec.digest(data)
            if not path.exists():
                write_file(path, data, self.file_mode)
            url = path.resolve().as_uri()
        return url

    def prune(self, *, max_bytes: int | None = None, grace: float = 3600.0, dry_run: bool = False
              ) -> PruneReport | None:
        """Remove what the local directory no longer needs (see :mod:`imgcache.store.prune`);
        None without a local directory."""
        return self.store.prune(max_bytes=max_bytes, grace=grace, dry_run=dry_run)

    def push_recent(self, name: str, record: bytes, keep: int) -> None:
        """Push ``record`` onto this namespace's shared list ``name`` of the newest ``keep``
        (Redis, else the local directory; nowhere without either). Failures cost the record."""
        self.store.push_recent(self.namespace, name, record, keep)

    def read_recent(self, name: str) -> list[bytes]:
        """The shared list ``name``, newest first ([] where there is none or it failed)."""
        return self.store.read_recent(self.namespace, name)

    def shared_secret(self, name: str, fresh: bytes) -> bytes | None:
        """The secret called ``name`` that every process sharing the store agrees on (the
        first one kept, ``fresh`` if this process is first); None if nothing is shared."""
        return self.store.keep_secret(name, fresh)

    def claims(self, scope: str, *, lease: float, refusal_ttl: float) -> GuardedClaims | None:
        """This namespace's claims for ``scope`` shared with every worker of the store (see
        :mod:`imgcache.store.claims`; Redis, else the local directory); None if nothing is shared."""
        return self.store.claims(self.namespace, scope, lease=lease, refusal_ttl=refusal_ttl)

    def rate_buckets(self, scope: str) -> SharedBuckets | None:
        """This namespace's token buckets for ``scope`` shared with every process of the store
        (see :mod:`imgcache.store.rate`; Redis only); None where there are none."""
        return self.store.rate_buckets(self.namespace, scope)

    def spending_ledger(self) -> GuardedLedger | None:
        """This namespace's spending ledger shared with every process of the store (see
        :mod:`imgcache.store.ledger`; Redis, else the local directory); None where there is none."""
        return self.store.ledger(self.namespace)

    # -- options, matchers and stats ---------------------------------------------------------------

    @contextmanager
    def options(self, *, semantic: bool = True, perceptual: bool = True) -> Iterator[None]:
        """Per-call switches for the calls made inside the block (this thread or task):
        ``with cache.options(semantic=False, perceptual=False): ...`` matches exactly only."""
        tokens = SEMANTIC_ON.set(semantic), PERCEPTUAL_ON.set(perceptual)
        try:
            yield
        finally:
            SEMANTIC_ON.reset(tokens[0])
            PERCEPTUAL_ON.reset(tokens[1])

    @property
    def semantic_options(self) -> SemanticOptions | None:
        return self._lookup.semantic_options

    @property
    def vision_options(self) -> VisionOptions:
        return self._lookup.vision_options

    @property
    def invalidations(self) -> Invalidations:
        return self._lookup.invalidations

    @property
    def semantic(self) -> SemanticMatcher | None:
        """The semantic matcher; None when semantic matching is off (see :mod:`imgcache._lookup`)."""
        return self._lookup.semantic

    @property
    def perceptual(self) -> PerceptualMatcher | None:
        """The perceptual matcher; None when perceptual matching is off."""
        return self._lookup.perceptual

    def recent_semantic_hits(self) -> list[dict[str, Any]]:
        """The latest semantic hits of every process sharing the Redis (or directory)."""
        return self._lookup.recent_semantic_hits()

    def namespaces(self, limit: int) -> tuple[list[str], bool] | None:
        """The namespaces with shared counters (sorted, at most ``limit``) and whether there
        are more; None where nothing is shared."""
        return self.store.namespaces(limit)

    def stats(self, *, shared: bool = False) -> dict[str, Any]:
        """Counters of this cache object, or with ``shared`` those of every process that
        shares its Redis (or its directory), this one's pending figures included."""
        if shared:
            self.flush_stats()
            counters = self.store.read_counters(self.namespace)
            figures = nest(self.stats_counters.snapshot() if counters is None else counters)
            figures["recent_semantic_hits"] = self.recent_semantic_hits()
            figures["index_snapshots"] = self._lookup.index_snapshots()
        else:
            figures = nest(self.stats_counters.snapshot())
        errors = figures.setdefault("tier_errors", {})
        for name in self.store.tier_names:  # present whether or not a tier ever failed
            errors.setdefault(name, 0)
        figures["namespace"] = self.namespace
        figures["tiers"] = self.store.health()
        if self.spending is not None:
            counted = dict.fromkeys(("refused", "warnings", "unpriced", "ledger_errors"), 0)
            figures["budget"] = {**counted, **figures.get("budget", {}), **self.spending.status()}
        return figures

    def flush_stats(self) -> None:
        pending = self.stats_counters.take_pending()
        if pending and not self.store.add_counters(self.namespace, pending):
            self.stats_counters.restore_pending(pending)  # failed, or nowhere to go yet

    def _ensure_stats_thread(self) -> None:
        if self._stats_thread is None and not self._closed:
            self._stats_thread = threading.Thread(target=self._stats_loop, name="imgcache-stats", daemon=True)
            self._stats_thread.start()

    def _stats_loop(self) -> None:
        """Publish this cache's figures, and learn the other processes' invalidations (which
        a process serving from memory would not read otherwise)."""
        while not self._stats_stop.wait(self.stats_interval):
            self.flush_stats()
            self._lookup.invalidations.catch_up()

    # -- lifecycle ---------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Finish background writes and publish pending stats."""
        self.store.flush(timeout)
        self.flush_stats()

    def close(self) -> None:
        """Flush and release connections. Safe to call twice; also run at interpreter exit."""
        if self._closed:
            return
        self._closed = True
        self._stats_stop.set()
        if self._stats_thread is not None:
            self._stats_thread.join(timeout=5)
        self.store.flush(timeout=30)
        self.flush_stats()
        if self._owns_store:
            self.store.close()
        _live_caches.discard(self)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cached(self, kind: str = "generation", **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """Decorate a function (sync or async) so that its calls are answered from this cache.
        See :func:`imgcache.adapters.decorator.cached` for the options."""
        from .adapters.decorator import cached

        return cached(self, kind, **options)


_live_caches: weakref.WeakSet[Cache] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for cache in list(_live_caches):
        cache.close()
