"""The cache front: configuration, policy, and the path of one call.

Policy lives here and only here (STYLE 2): which tiers exist, TTL and its extension on hits,
single-flight, savings arithmetic, stats. Adapters (the decorator, ``wrap``) turn their calls
into a :class:`~imgcache.request.Request` plus an upstream callable and call
:meth:`Cache.fetch` or :meth:`Cache.afetch`; the two are twins over the same helpers, only
their waiting and I/O differ.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import dataclasses
import logging
import math
import numbers
import os
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import codec
from ._config import parse_bytes, parse_duration
from ._files import DEFAULT_FILE_MODE, check_file_mode, parse_file_mode, write_file
from .errors import (
    ConfigError,
    CorruptData,
    ImageError,
    TierUnavailable,
    UncachedResultWarning,
    UnstorableResult,
)
from .flight import Heartbeat, LocalFlight, Pending, SimilarFlights
from .invalidation import Invalidations, made_for
from .match.config import SemanticOptions, VisionOptions, read_recent_hits
from .match.optional import describe, semantic_missing, vision_missing, warn_once
from .prewarm.history import record_miss
from .request import Request
from .stats import MATCHES, TIERS, Stats, nest
from .store.base import Tier, blob_key, check_namespace, entry_key
from .store.memory import MemoryTier
from .store.tiered import FAILED, MANIFEST_VERSION, Hit, TieredStore

if TYPE_CHECKING:
    from .match.semantic import SemanticMatcher
    from .match.vision import PerceptualMatcher

log = logging.getLogger("imgcache")
T = TypeVar("T")
Cost = float | None | Callable[[T], float | None]
"""What an upstream call costs in USD: known before the call, or computed from its result
(a response's token usage), or None when unknown."""
_SEMANTIC_ON: ContextVar[bool] = ContextVar("imgcache_semantic", default=True)
_PERCEPTUAL_ON: ContextVar[bool] = ContextVar("imgcache_perceptual", default=True)
MiB = 1 << 20
TTL_EXTENSION_CAP = 8
"""With a TTL, an entry that keeps being hit lives up to this many TTLs from its creation."""


def _identity(value: Any) -> Any:
    return value


def _as_stored(value: Any, hit: Hit) -> Any:
    return value


def default_directory() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("imgcache", appauthor=False))


class Cache:
    """A three-tier, content-addressed cache for image-generation and vision calls.

    With neither ``redis_url`` nor ``s3_bucket`` it runs embedded, on memory plus a local
    directory (``directory``, by default the user's cache directory) that persists across
    runs. With Redis and/or S3 it shares entries with every process that uses them; a local
    directory is then used only when ``directory`` is given.

    Local files are private to their user: created with ``file_mode`` (default ``0o600``),
    directories with the matching mode (``0o700``); ``0o640`` shares them with the group.
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
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.file_mode = check_file_mode(file_mode)
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"ttl must be positive seconds or None, not {ttl!r}")
        if memory_bytes < 0:
            raise ConfigError("memory_bytes must be >= 0")
        self.ttl = ttl
        self.semantic_options: SemanticOptions | None = (
            SemanticOptions() if semantic is True else semantic or None
        )
        self._semantic: SemanticMatcher | None = None
        self._semantic_lock = threading.Lock()
        self.vision_options = vision or VisionOptions()
        self._perceptual: PerceptualMatcher | None = None
        self.lock_timeout = lock_timeout
        self.wait_timeout = wait_timeout
        self.stats_counters = Stats()

        tiers: list[Tier] = []
        if directory is not None or (redis_url is None and s3_bucket is None):
            from .store.disk import DiskTier

            self.directory: Path | None = Path(directory) if directory is not None else default_directory()
            tiers.append(DiskTier(self.directory, file_mode=file_mode))
        else:
            self.directory = None
        if redis_url:
            from .store.redis import RedisTier

            tiers.append(RedisTier(redis_url))
        if s3_bucket:
            from .store.s3 import S3Tier

            tiers.append(S3Tier(s3_bucket, endpoint_url=s3_endpoint_url, prefix=s3_prefix))
        # With S3 behind it, Redis keeps only small blobs; without, it must keep them all.
        if redis_max_blob_bytes is None and s3_bucket:
            redis_max_blob_bytes = 4 * MiB
        self.store = TieredStore(MemoryTier(memory_bytes) if memory_bytes else None, tiers,
                                 self.stats_counters, max_blob_bytes={"redis": redis_max_blob_bytes})
        self._flight = LocalFlight()
        self._async_flight = LocalFlight(asyncio.Event, per_loop=True)
        self._similar_flights = SimilarFlights()
        self._heartbeat = Heartbeat(lock_timeout)
        self._closed = False
        self._stats_stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self.stats_interval = stats_interval
        self.invalidations = self._new_invalidations()
        self._owns_store = True
        _live_caches.add(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> Cache:
        """A cache configured from ``IMGCACHE_*`` environment variables; keyword arguments win."""
        env = os.environ
        config: dict[str, Any] = {}
        for name, key in (
            ("IMGCACHE_NAMESPACE", "namespace"),
            ("IMGCACHE_REDIS_URL", "redis_url"),
            ("IMGCACHE_S3_BUCKET", "s3_bucket"),
            ("IMGCACHE_S3_ENDPOINT_URL", "s3_endpoint_url"),
            ("IMGCACHE_S3_PREFIX", "s3_prefix"),
            ("IMGCACHE_DIR", "directory"),
        ):
            if env.get(name):
                config[key] = env[name]
        if env.get("IMGCACHE_MEMORY_BYTES"):
            config["memory_bytes"] = parse_bytes(env["IMGCACHE_MEMORY_BYTES"], "IMGCACHE_MEMORY_BYTES")
        if env.get("IMGCACHE_TTL"):
            config["ttl"] = parse_duration(env["IMGCACHE_TTL"], "IMGCACHE_TTL")
        if env.get("IMGCACHE_FILE_MODE"):
            config["file_mode"] = parse_file_mode(env["IMGCACHE_FILE_MODE"], "IMGCACHE_FILE_MODE")
        config.update(overrides)
        return cls(**config)

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
        view._semantic = view._perceptual = None
        view._semantic_lock = threading.Lock()
        view._flight = LocalFlight()
        view._async_flight = LocalFlight(asyncio.Event, per_loop=True)
        view._similar_flights = SimilarFlights()
        view._closed = False
        view._stats_stop = threading.Event()
        view._stats_thread = None
        view.invalidations = view._new_invalidations()
        view._owns_store = False
        _live_caches.add(view)
        return view

    def _new_invalidations(self) -> Invalidations:
        """This namespace's invalidations, forgotten once every copy they refuse has expired."""
        longest = None if self.ttl is None else self.ttl * TTL_EXTENSION_CAP
        return Invalidations(self.store, self.namespace, sync_interval=self.stats_interval,
                             max_age=longest)

    # -- the path of one call -------------------------------------------------------------

    def lookup(self, request: Request, *, near: bool = False) -> Hit | None:
        """The stored entry for a request, or None; no stats, no upstream call. With ``near``
        also a verified semantic or perceptual match, stored under the request's key as a
        live lookup would (ImageError if an input image cannot be read)."""
        return self._get(request.key) or (self._near_hit(request) if near else None)

    def entry(self, key: str) -> Hit | None:
        """The entry stored under a request key, unless its result was invalidated; no stats
        (what the proxy's file URLs serve)."""
        return self._get(key)

    def contains(self, request: Request) -> bool:
        """Whether the request's entry is stored (manifests only: no blob is read, unless an
        invalidation makes the entry worth a closer look)."""
        if not self.store.has_entry(self.namespace, request.key):
            return False
        self.invalidations.catch_up()
        return not self.invalidations.active() or self._get(request.key) is not None

    def _get(self, key: str) -> Hit | None:
        """The entry stored under ``key``, unless its result was invalidated (see
        :mod:`imgcache.invalidation`) after it was made."""
        self.invalidations.catch_up()
        hit = self.store.get(self.namespace, key)
        if hit is not None and self._refused(key, hit):
            # a copy in this process's memory: the shared tiers may hold a newer entry
            hit = self.store.get(self.namespace, key) if hit.tier == "memory" else None
            if hit is not None and self._refused(key, hit):
                hit = None
        return hit

    def _refused(self, key: str, hit: Hit) -> bool:
        """Whether ``hit``, found under ``key``, holds a result invalidated since it was made.
        Such a copy is dropped: from this process's memory if it was read there (another
        tier may hold a newer entry), else from every tier."""
        if not self.invalidations.stale(hit.manifest):
            return False
        log.debug("imgcache: entry %s holds an invalidated result; dropped", key[:12])
        self.store.delete(self.namespace, key, memory_only=hit.tier == "memory")
        return True

    def fetch(
        self,
        request: Request,
        upstream: Callable[[], T],
        *,
        to_storable: Callable[[T], Any] = _identity,
        from_storable: Callable[[Any, Hit], T] = _as_stored,
        cost_usd: Cost[T] = None,
    ) -> T:
        """Answer ``request`` from the cache, or call ``upstream`` once and store its result.

        ``to_storable`` turns an upstream result into JSON data with bytes inside (see
        :mod:`imgcache.codec`) and may raise UnstorableResult; ``from_storable`` rebuilds the
        caller's type from that data on a hit; ``cost_usd`` is a number or a function of the
        upstream result. Upstream errors propagate unchanged.
        """
        try:
            _check_inputs(request)
            hit = self._get(request.key) or self._near_hit(request)
        except ImageError as exc:
            self._unreadable_image(request, exc, passed_through=True)
            return upstream()
        served = self._serve(request, hit, from_storable, first=True)
        if served is not _NOT_SERVED:
            return served
        self.stats_counters.add({"requests": 1})
        while True:
            with self._flight.lead(request.key) as flight:
                if flight is None:
                    return self._lead(request, upstream, to_storable, from_storable, cost_usd)
                flight.done.wait(self.wait_timeout)
                hit = self._get(request.key)
                served = self._serve(request, hit, from_storable, coalesced=True)
                if served is not _NOT_SERVED:
                    return served
                if flight.error is not None:
                    raise flight.error
            # The leader's result was not stored (unstorable): take a turn ourselves.

    async def afetch(
        self,
        request: Request,
        upstream: Callable[[], Awaitable[T]],
        *,
        to_storable: Callable[[T], Any] = _identity,
        from_storable: Callable[[Any, Hit], T] = _as_stored,
        cost_usd: Cost[T] = None,
    ) -> T:
        """The twin of :meth:`fetch` for coroutines: tier I/O runs in worker threads."""
        try:
            _check_inputs(request)
            hit = await self._aget(request)
            if hit is None and self._near_match_wanted(request):
                hit = await asyncio.to_thread(self._near_hit, request)
        except ImageError as exc:
            self._unreadable_image(request, exc, passed_through=True)
            return await upstream()
        served = self._serve(request, hit, from_storable, first=True)
        if served is not _NOT_SERVED:
            return served
        self.stats_counters.add({"requests": 1})
        while True:
            with self._async_flight.lead(request.key) as flight:
                if flight is None:
                    return await self._alead(request, upstream, to_storable, from_storable, cost_usd)
                try:
                    await asyncio.wait_for(flight.done.wait(), self.wait_timeout)
                except asyncio.TimeoutError:
                    pass
                served = self._serve(request, await self._aget(request), from_storable, coalesced=True)
                if served is not _NOT_SERVED:
                    return served
                if flight.error is not None:
                    raise flight.error

    def _lead(self, request: Request, upstream: Callable[[], T], to_storable: Callable[[T], Any],
              from_storable: Callable[[Any, Hit], T], cost_usd: Cost[T]) -> T:
        lock = None
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.01
        while True:
            lock, hit = self._try_shared_lock(request)
            served = self._serve(request, hit, from_storable, coalesced=True)
            if served is not _NOT_SERVED or lock is not _WAIT or time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        if served is not _NOT_SERVED:
            self._release(lock)  # found after taking the lock: it is not needed
            return served
        try:
            with self._similar_flight(request, self._similar_item(request)) as similar:
                if similar is not None:  # the same thing in other words is being made: wait for it
                    similar.wait(self.wait_timeout)
                    served = self._serve(request, self._near_hit(request), from_storable, coalesced=True)
                    if served is not _NOT_SERVED:
                        return served
                started = time.perf_counter()
                try:
                    result = upstream()
                except BaseException:
                    self.stats_counters.add({"misses": 1, "upstream_calls": 1, "upstream_errors": 1})
                    raise
                return self._after_upstream(request, result, to_storable, cost_usd,
                                            time.perf_counter() - started)
        finally:
            self._release(lock)

    async def _alead(self, request: Request, upstream: Callable[[], Awaitable[T]],
                     to_storable: Callable[[T], Any], from_storable: Callable[[Any, Hit], T],
                     cost_usd: Cost[T]) -> T:
        lock = None
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.01
        while True:
            lock, hit = await asyncio.to_thread(self._try_shared_lock, request)
            served = self._serve(request, hit, from_storable, coalesced=True)
            if served is not _NOT_SERVED or lock is not _WAIT or time.monotonic() > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        if served is not _NOT_SERVED:
            if lock is not None and lock is not _WAIT:  # found after taking the lock
                await asyncio.to_thread(self._release, lock)
            return served
        try:
            item = await asyncio.to_thread(self._similar_item, request) if self._semantic_wanted(request) else None
            with self._similar_flight(request, item) as similar:
                if similar is not None:  # the same thing in other words is being made: wait for it
                    await similar.wait_async(self.wait_timeout)
                    hit = await asyncio.to_thread(self._near_hit, request)
                    served = self._serve(request, hit, from_storable, coalesced=True)
                    if served is not _NOT_SERVED:
                        return served
                started = time.perf_counter()
                try:
                    result = await upstream()
                except BaseException:
                    self.stats_counters.add({"misses": 1, "upstream_calls": 1, "upstream_errors": 1})
                    raise
                elapsed = time.perf_counter() - started
                return await asyncio.to_thread(self._after_upstream, request, result, to_storable, cost_usd,
                                               elapsed)
        finally:
            await asyncio.to_thread(self._release, lock)

    def _after_upstream(self, request: Request, result: T, to_storable: Callable[[T], Any],
                        cost_usd: Cost[T], elapsed: float) -> T:
        """Count an upstream call and store its result (when it can be stored faithfully)."""
        if callable(cost_usd):
            try:
                cost_usd = cost_usd(result)
            except Exception as exc:  # a pricing gap costs the figure, never the call
                log.warning("imgcache: pricing %s failed: %r", request.operation, exc)
                cost_usd = None
        cost_usd = _usd(cost_usd, request.operation)
        self.stats_counters.add({"misses": 1, "upstream_calls": 1, "spent_usd": cost_usd or 0.0})
        try:
            storable = to_storable(result)
            stored = self.store_result(request, storable, cost_usd=cost_usd, elapsed=elapsed)
        except UnstorableResult as exc:
            self._uncacheable(exc)
            return result
        except Exception as exc:  # a bug on the store path must not cost a result already paid for
            log.exception("imgcache: storing %s failed; result returned uncached", request.key[:12])
            self._uncacheable(UnstorableResult(f"storing it failed: {exc!r}"))
            return result
        if stored:
            # The request log behind `imgcache prewarm --from-history`: only what a prewarm
            # could store, so an unstorable result leaves nothing behind.
            record_miss(self, request)
        return result

    def _unreadable_image(self, request: Request, exc: ImageError, *, passed_through: bool) -> None:
        """An input image that cannot be read is the API's to judge: the call goes upstream
        as if there were no cache (``passed_through``), and nothing is stored for it."""
        log.warning("imgcache: %s not cached: %s", request.operation, exc)
        counts = {"unreadable_images": 1}
        if passed_through:
            counts.update({"requests": 1, "misses": 1, "upstream_calls": 1})
        self.stats_counters.add(counts)

    def _uncacheable(self, exc: UnstorableResult) -> None:
        warnings.warn(f"imgcache: result returned uncached: {exc}", UncachedResultWarning, stacklevel=5)
        self.stats_counters.add({"uncacheable": 1})

    # -- helpers shared by the twins --------------------------------------------------------

    async def _aget(self, request: Request) -> Hit | None:
        hit = self.store.get_memory(self.namespace, request.key)
        if hit is not None and self._refused(request.key, hit):
            hit = None
        if hit is None and self.store.tiers:
            hit = await asyncio.to_thread(self._get, request.key)
        return hit

    def _serve(self, request: Request, hit: Hit | None, from_storable: Callable[[Any, Hit], T],
               *, first: bool = False, coalesced: bool = False) -> T | Any:
        """Turn a hit into the caller's result and count it (and, on a call's ``first``
        lookup, the request too); _NOT_SERVED if there is none or it cannot be rebuilt."""
        if hit is None:
            return _NOT_SERVED
        manifest = hit.manifest
        try:
            result = from_storable(codec.decode(manifest["result"], hit.blobs), hit)
        except (CorruptData, UnstorableResult, KeyError, TypeError, ValueError) as exc:
            log.warning("imgcache: stored entry %s cannot be rebuilt (%r); treating as a miss",
                        request.key[:12], exc)
            self.stats_counters.add({"corrupt": 1})
            self.store.delete(self.namespace, request.key)
            return _NOT_SERVED
        counts = {
            "requests": int(first),
            "hits": 1,
            "coalesced": int(coalesced),
            "saved_usd": manifest.get("cost_usd") or 0.0,
            "saved_seconds": manifest.get("elapsed") or 0.0,
            _TIER_COUNTER[hit.tier]: 1,
            _MATCH_COUNTER[manifest.get("match", "exact")]: 1,
        }
        self.stats_counters.add(counts)
        self._ensure_stats_thread()
        if manifest.get("ttl") is not None:
            self._extend_lifetime(request, manifest)
        return result

    # -- semantic matching ------------------------------------------------------------------

    @property
    def semantic(self) -> SemanticMatcher | None:
        """The semantic matcher (created on first use: the model loads on the first lookup).
        None when semantic matching is off: by configuration, or because its stack (the
        ``semantic`` extra) is missing or broken in this process; then the cache matches
        exactly, and says so once in its log (see :mod:`imgcache.match.optional`)."""
        options = self.semantic_options
        if options is None:
            return None
        if self._semantic is None:
            # Probed once per process (imports numpy and usearch, looks the model's packages up).
            missing = semantic_missing(options.embedder)
            if missing is not None:
                self._semantic_off(missing)
                return None
        with self._semantic_lock:
            if self._semantic is None:
                try:
                    from .match.semantic import SemanticMatcher

                    self._semantic = SemanticMatcher(self.namespace, self.store, options)
                except ImportError as exc:
                    self._semantic_off(describe(exc))
                    return None
        return self._semantic

    @property
    def perceptual(self) -> PerceptualMatcher | None:
        """The perceptual matcher of vision requests. None with ``VisionOptions(perceptual=False)``
        or when the ``vision`` extra (Pillow, imagehash, numpy, scipy) is missing or broken in
        this process: images are then matched by their bytes only, as with
        ``perceptual=False`` (said once in the log)."""
        if not self.vision_options.perceptual:
            return None
        if self._perceptual is None:
            missing = vision_missing()  # probed once per process
            if missing is not None:
                self._perceptual_off(missing)
                return None
        with self._semantic_lock:
            if self._perceptual is None:
                try:
                    from .match.vision import PerceptualMatcher

                    self._perceptual = PerceptualMatcher(self.namespace, self.store,
                                                         self.vision_options)
                except ImportError as exc:
                    self._perceptual_off(describe(exc))
                    return None
        return self._perceptual

    def _semantic_off(self, reason: str) -> None:
        """Semantic matching cannot run here (its stack is missing or broken): exact only."""
        self.semantic_options = None
        warn_once("semantic", reason)

    def _perceptual_off(self, reason: str) -> None:
        """Perceptual matching cannot run here: images are keyed by their bytes only."""
        if self.vision_options.perceptual:
            self.vision_options = dataclasses.replace(self.vision_options, perceptual=False)
        warn_once("vision", reason)

    @contextmanager
    def options(self, *, semantic: bool = True, perceptual: bool = True) -> Iterator[None]:
        """Per-call switches for the calls made inside the block (this thread or task):
        ``with cache.options(semantic=False, perceptual=False): ...`` matches exactly only."""
        tokens = _SEMANTIC_ON.set(semantic), _PERCEPTUAL_ON.set(perceptual)
        try:
            yield
        finally:
            _SEMANTIC_ON.reset(tokens[0])
            _PERCEPTUAL_ON.reset(tokens[1])

    def _semantic_wanted(self, request: Request) -> bool:
        return self.semantic_options is not None and request.kind == "generation" and _SEMANTIC_ON.get()

    def _perceptual_wanted(self, request: Request) -> bool:
        """Vision requests whose images are all at hand (not keyed by URL only)."""
        return (self.vision_options.perceptual and _PERCEPTUAL_ON.get() and bool(request.inputs)
                and not any(image.keyed_by_url for image in request.inputs))

    def _near_match_wanted(self, request: Request) -> bool:
        return self._semantic_wanted(request) or self._perceptual_wanted(request)

    def _near_hit(self, request: Request) -> Hit | None:
        """After an exact miss: an entry made for a request that asks for the same thing in
        other words (semantic) or about a copy of the same picture (perceptual). It is stored
        under this request's key too (an alias manifest), so that its repeat is found by key
        without matching again (and still counted as the match that made the alias).
        Raises ImageError if an input image of a vision request cannot be read."""
        if self._perceptual_wanted(request):
            return self._perceptual_hit(request)
        if self._semantic_wanted(request):
            return self._semantic_hit(request)
        return None

    def _alias(self, request: Request, hit: Hit, match: str, matched: dict[str, Any]) -> Hit | None:
        """Store ``hit`` under ``request``'s key as a ``match`` hit; None if the stored entry
        was made for a request of another scope (the indexes never cross scopes; a damaged
        feed record must not make them)."""
        stored = hit.manifest.get("request") or {}
        if (stored.get("kind"), stored.get("op"), stored.get("params")) != (
                request.kind, request.operation, request.params):
            log.warning("imgcache: index proposed %s for a request of another scope; ignored",
                        matched.get("key", "?")[:12])
            self.stats_counters.add({"corrupt": 1})
            return None
        if self._refused(matched["key"], hit):  # the perceptual matcher reads its candidates itself
            return None
        matched = dict(matched, created=made_for(hit.manifest)[1])  # when its result was made
        manifest = dict(hit.manifest, key=request.key, request=request.describe(), match=match,
                        created=time.time(), hits=0, matched=matched)
        self.store.put(self.namespace, request.key, manifest, hit.blobs, blobs_stored=True)
        return Hit(manifest, hit.blobs, hit.tier)

    def _perceptual_hit(self, request: Request) -> Hit | None:
        matcher = self.perceptual
        if matcher is None:
            return None
        try:
            found = matcher.find(request)
        except ImportError as exc:  # a part of the vision stack the probe did not reach
            self._perceptual_off(describe(exc))
            return None
        if found is None:
            return None
        stored = found.hit.manifest.get("request") or {}
        if stored.get("prompt") != request.prompt:
            return None
        return self._alias(request, found.hit, "perceptual",
                           {"key": found.key, "images": stored.get("images"),
                            "distance": found.distance, "verdict": found.reason})

    def _semantic_hit(self, request: Request) -> Hit | None:
        matcher = self.semantic
        if matcher is None:
            return None
        proposals = self._semantic_call(matcher.propose, request) or []
        for proposal in proposals:
            if not proposal.verdict.same:
                continue
            hit = self._get(proposal.candidate.key)
            if hit is None:
                matcher.forget(request, proposal.candidate.key)
                continue
            if (hit.manifest.get("request") or {}).get("prompt") != proposal.candidate.prompt:
                continue  # the feed's prompt is not the entry's: the verdict was about another prompt
            alias = self._alias(request, hit, "semantic", {
                "key": proposal.candidate.key, "prompt": proposal.candidate.prompt,
                "similarity": round(proposal.candidate.similarity, 4),
                "verdict": proposal.verdict.reason})
            if alias is not None:
                matcher.record_hit(request, proposal)
                return alias
        return None

    def _similar_item(self, request: Request) -> tuple[SemanticMatcher, str, Any] | None:
        """How a generation request about to call upstream compares with the others in flight
        (see :meth:`_similar_flight`); None without semantic matching."""
        matcher = self.semantic if self._semantic_wanted(request) else None
        found = None if matcher is None else self._semantic_call(matcher.in_flight, request)
        return None if found is None else (matcher, *found)  # type: ignore[misc]

    @contextmanager
    def _similar_flight(self, request: Request, item: tuple[SemanticMatcher, str, Any] | None
                        ) -> Iterator[Pending | None]:
        """Single-flight by meaning: the call of a request that asks for the same thing in
        other words, already in flight in this process (wait for it, then match its stored
        result), or None: this request's call is the one in flight until the block ends."""
        if item is None:
            yield None
            return
        matcher, scope, flying = item
        with self._similar_flights.lead_or_join(scope, request.key, flying, matcher.same_in_flight) as pending:
            yield pending

    def _semantic_call(self, method: Callable[[Request], T], request: Request) -> T | None:
        """Semantic matching that fails costs semantic matching, never the caller's call."""
        try:
            return method(request)
        except ImportError as exc:  # the stack (or the model) failed after the probe: off for good
            self._semantic_off(describe(exc))
        except Exception as exc:  # a broken embedder or feed
            log.warning("imgcache: semantic matching failed for %s: %r", request.key[:12], exc)
        return None

    def recent_semantic_hits(self) -> list[dict[str, Any]]:
        """The latest semantic hits of every process sharing the Redis (or directory)."""
        tier = self.store.shared_store()
        hits = [] if tier is None else self.store.guarded(tier, read_recent_hits, tier, self.namespace)
        return hits if isinstance(hits, list) else []

    def _try_shared_lock(self, request: Request) -> tuple[Any, Hit | None]:
        """One attempt at the cross-process lock, and a look at the store made after it:
        (lock, hit-or-None) when taken or when there is no shared lock to take (lock None),
        (_WAIT, hit-or-None) while another process holds it.

        The look is what makes a burst of identical requests one upstream call: a request
        that missed before the previous leader stored its result (its own lookup, a semantic
        match included, takes a while) leads a flight of its own after that leader is done,
        and must find the result instead of calling upstream again."""
        redis = self.store.available("redis")
        lock = None if redis is None else self.store.guarded(
            redis, self._acquire, redis, entry_key(self.namespace, request.key))
        if lock is FAILED:  # Redis failed under the lock: go on without it
            lock = None
        elif lock is not None:
            self._heartbeat.hold(lock)
        elif redis is not None:
            lock = _WAIT
        return lock, self._get(request.key)

    def _acquire(self, redis: Any, ekey: str) -> Any:
        """The flight lock for ``ekey`` if it is free, else None; Redis errors as TierError."""
        with redis.translate_errors():
            lock = redis.mutex(ekey, self.lock_timeout)
            return lock if lock.acquire(blocking=False) else None

    def _release(self, lock: Any) -> None:
        if lock is None or lock is _WAIT:
            return
        self._heartbeat.drop(lock)
        try:
            lock.release()
        except Exception as exc:  # expired or Redis gone: its timeout frees it
            log.debug("imgcache: releasing flight lock: %r", exc)

    def _extend_lifetime(self, request: Request, manifest: dict[str, Any]) -> None:
        """Sliding TTL: a hit in the second half of an entry's life renews it, up to the cap."""
        ttl, expires, cap = manifest.get("ttl"), manifest.get("expires"), manifest.get("max_expires")
        if ttl is None or expires is None or cap is None:
            return
        now = time.time()
        if expires - now > ttl / 2 or expires >= cap:
            return
        renewed = dict(manifest, expires=min(now + ttl, cap), hits=int(manifest.get("hits", 0)) + 1)
        self.store.rewrite_manifest(self.namespace, request.key, renewed)

    def store_result(self, request: Request, storable: Any, *, cost_usd: float | None = None,
                     elapsed: float = 0.0, ttl: float | None = None) -> bool:
        """Store a result given as storable data (see :mod:`imgcache.codec`); False, with an
        :class:`UncachedResultWarning`, when it cannot be stored faithfully."""
        try:
            reference, blobs = codec.encode(storable)
        except UnstorableResult as exc:
            self._uncacheable(exc)
            return False
        perceptual = self.perceptual if self._perceptual_wanted(request) else None
        images: list[dict[str, Any]] = []
        try:  # only fails when called directly: fetch has read the images already
            _check_inputs(request)
            if perceptual is not None:
                images, fingerprints = perceptual.stored_form(request)
                blobs = {**blobs, **fingerprints}
        except ImageError as exc:
            self._unreadable_image(request, exc, passed_through=False)
            return False
        except ImportError as exc:  # the vision stack failed after the probe: keyed by bytes only
            self._perceptual_off(describe(exc))
            perceptual = None
        ttl = self.ttl if ttl is None else ttl
        now = time.time()
        manifest = {
            "v": MANIFEST_VERSION,
            "key": request.key,
            "request": request.describe(),
            "result": reference,
            "created": now,
            "ttl": ttl,
            "expires": None if ttl is None else now + ttl,
            "max_expires": None if ttl is None else now + ttl * TTL_EXTENSION_CAP,
            "cost_usd": cost_usd,
            "elapsed": round(elapsed, 6),
            "hits": 0,
        }
        if images:
            manifest["images"] = images
        self.store.put(self.namespace, request.key, manifest, blobs)
        self.stats_counters.add({"stored": 1})
        matcher = self.semantic if self._semantic_wanted(request) else None
        if matcher is not None:
            self._semantic_call(matcher.add, request)
        if perceptual is not None:
            try:
                perceptual.add(request)
            except ImportError as exc:
                self._perceptual_off(describe(exc))
        self._ensure_stats_thread()
        return True

    def delete(self, request: Request) -> None:
        """Invalidate a request's result: its entry goes from every tier (its blobs stay:
        others may share them), and every process stops serving copies of it, the aliases
        semantic and perceptual matches made of it included (see :mod:`imgcache.invalidation`).
        The request asked again is answered anew."""
        self.store.delete(self.namespace, request.key)
        self.invalidations.record(request.key)

    # -- URLs for cached bytes ------------------------------------------------------------

    def url_for(self, data: bytes, manifest: Mapping[str, Any]) -> str:
        """A URL that serves ``data`` for the entry's lifetime: presigned S3 where S3 is
        configured, otherwise a ``file://`` URL in the local directory."""
        digest = codec.digest(data)
        key = blob_key(self.namespace, digest)
        s3 = self.store.available("s3")
        if s3 is not None:
            remaining = manifest.get("max_expires") or manifest.get("expires")
            lifetime = 7 * 86400 if remaining is None else int(remaining - time.time())
            present = self.store.guarded(s3, s3.contains, key)  # type: ignore[attr-defined]
            if present is False:  # its write may still be queued, or may have failed: write it now
                present = self.store.guarded(s3, s3.set, key, data, None) is not FAILED
            if present is True:
                return s3.presigned_url(key, max(1, lifetime))  # type: ignore[attr-defined]
        disk = self.store.available("disk")
        if disk is not None:
            path = disk.path_for(key)  # type: ignore[attr-defined]
        else:
            path = default_directory() / "urls" / self.namespace / digest
        if not path.exists():
            write_file(path, data, self.file_mode)
        return path.resolve().as_uri()

    # -- stats ------------------------------------------------------------------------------

    def stats(self, *, shared: bool = False) -> dict[str, Any]:
        """Counters of this cache object, or with ``shared`` those of every process that
        shares its Redis (or its directory), this one's pending figures included."""
        if not shared:
            figures = nest(self.stats_counters.snapshot())
        else:
            self.flush_stats()
            sink = self.store.shared_store()
            if sink is None:  # nothing shared (S3 alone): this process's figures are all there is
                shared_figures: Any = self.stats_counters.snapshot()
            else:
                shared_figures = self.store.guarded(sink, sink.read_counters, self.namespace)
            if shared_figures is FAILED:
                raise TierUnavailable(sink.name, "the shared stats could not be read")
            figures = nest(shared_figures)
            figures["recent_semantic_hits"] = self.recent_semantic_hits()
        errors = figures.setdefault("tier_errors", {})
        for name in self.store.tier_names:  # present whether or not a tier ever failed
            errors.setdefault(name, 0)
        figures["namespace"] = self.namespace
        figures["tiers"] = {name: ("up" if name == "memory" or self.store.breakers[name].closed else "down")
                            for name in self.store.tier_names}
        return figures

    def flush_stats(self) -> None:
        sink = self.store.shared_store()
        if sink is not None:
            self.store.guarded(sink, self.stats_counters.flush, self.namespace, sink)

    def _ensure_stats_thread(self) -> None:
        if self._stats_thread is None and not self._closed:
            self._stats_thread = threading.Thread(target=self._stats_loop, name="imgcache-stats", daemon=True)
            self._stats_thread.start()

    def _stats_loop(self) -> None:
        """Publish this cache's figures, and learn the other processes' invalidations (which
        a process serving from memory would not read otherwise)."""
        while not self._stats_stop.wait(self.stats_interval):
            self.flush_stats()
            self.invalidations.catch_up()

    # -- lifecycle ---------------------------------------------------------------------------

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


def _usd(cost: Any, operation: str) -> float | None:
    """A cost as a finite float, else None: what a pricing function returns is counted and
    stored as JSON, so a bad answer (a string, NaN, a huge int) must cost the figure only."""
    if cost is None:
        return None
    if isinstance(cost, numbers.Real) and not isinstance(cost, bool):
        try:
            usd = float(cost)
        except OverflowError:
            usd = math.inf
        if math.isfinite(usd):
            return usd
    log.warning("imgcache: pricing %s gave %s, not a finite number of USD; ignored",
                operation, type(cost).__name__)
    return None


def _check_inputs(request: Request) -> None:
    """Raise the error of the first input image that could not be read."""
    for image in request.inputs:
        if image.error is not None:
            raise image.error


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_NOT_SERVED = _Sentinel("NOT_SERVED")
_TIER_COUNTER = {tier: f"by_tier.{tier}" for tier in TIERS}
_MATCH_COUNTER = {match: f"by_match.{match}" for match in MATCHES}
_WAIT = _Sentinel("WAIT")
_live_caches: weakref.WeakSet[Cache] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for cache in list(_live_caches):
        cache.close()
