"""Where a request's answer is found: its exact entry, else a near match (a semantic match of a
generation prompt, a perceptual match of a vision request's images), never a result that was
invalidated after it was made.

Every read of a stored result goes through :meth:`Lookup.get`, which asks the invalidation
check (:mod:`imgcache.invalidation`): the cache's answers, the near matches' candidates and
the proxy's file URLs alike. A near match is stored under the request's own key (an *alias*
manifest) so that its repeat is found by key without matching again.

Matching that fails (a missing or broken optional stack, a broken embedder or feed) costs
matching, never the caller's call: the cache then matches exactly, and says so once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import manifest as manifests
from .errors import ImageError
from .flight import Pending, SimilarFlights
from .invalidation import Invalidations
from .manifest import Hit
from .match.config import FEED as SEMANTIC_FEED
from .match.config import PERCEPTUAL_FEED, SemanticOptions, VisionOptions, read_recent_hits
from .match.optional import describe, semantic_missing, vision_missing, warn_once
from .store.feed import SharedFeed

if TYPE_CHECKING:
    from .match.perceptual import PerceptualMatcher
    from .match.semantic import SemanticMatcher
    from .request import Request
    from .stats import Stats
    from .store.snapshots import SnapshotShelf
    from .store.tiered import TieredStore

log = logging.getLogger("imgcache")
T = TypeVar("T")
SEMANTIC_ON: ContextVar[bool] = ContextVar("imgcache_semantic", default=True)
PERCEPTUAL_ON: ContextVar[bool] = ContextVar("imgcache_perceptual", default=True)


class Lookup:
    """One namespace's reads: exact, near, and the refusal of invalidated results."""

    def __init__(self, namespace: str, store: TieredStore, stats: Stats, *,
                 semantic: SemanticOptions | None, vision: VisionOptions, sync_interval: float,
                 max_age: float | None) -> None:
        self.namespace = namespace
        self.store = store
        self.stats = stats
        self.semantic_options = semantic
        self.vision_options = vision
        self.invalidations = Invalidations(store, namespace, sync_interval=sync_interval, max_age=max_age)
        self.similar_flights = SimilarFlights()
        self._semantic: SemanticMatcher | None = None
        self._perceptual: PerceptualMatcher | None = None
        self._matchers_lock = threading.Lock()

    # -- exact ------------------------------------------------------------------------------

    def get(self, key: str) -> Hit | None:
        """The entry stored under ``key``, unless its result was invalidated after it was made."""
        self.invalidations.catch_up()
        hit = self.store.get(self.namespace, key)
        if hit is not None and self.refused(key, hit):
            # a copy in this process's memory: the shared tiers may hold a newer entry
            hit = self.store.get(self.namespace, key) if hit.tier == "memory" else None
            if hit is not None and self.refused(key, hit):
                hit = None
        return hit

    def get_memory(self, key: str) -> Hit | None:
        """The entry if this process's memory holds it (no I/O: safe on an event loop)."""
        hit = self.store.get_memory(self.namespace, key)
        return None if hit is None or self.refused(key, hit) else hit

    def contains(self, key: str) -> bool:
        """Whether an entry is stored under ``key`` (manifests only: no blob is read, unless
        an invalidation makes the entry worth a closer look)."""
        if not self.store.has_entry(self.namespace, key):
            return False
        self.invalidations.catch_up()
        return not self.invalidations.active() or self.get(key) is not None

    def refused(self, key: str, hit: Hit) -> bool:
        """Whether ``hit``, found under ``key``, holds a result invalidated since it was made.
        Such a copy is dropped: from this process's memory if it was read there (another
        tier may hold a newer entry), else from every tier."""
        if not self.invalidations.stale(hit.manifest):
            return False
        log.debug("imgcache: entry %s holds an invalidated result; dropped", key[:12])
        self.store.delete(self.namespace, key, memory_only=hit.tier == "memory")
        return True

    # -- what the matchers may read and share (see :mod:`imgcache.match.entries`) -------------

    def get_blobs(self, hit: Hit, digests: list[str]) -> dict[str, bytes] | None:
        return self.store.get_blobs(self.namespace, hit, digests)

    def corrupt(self, count: int = 1) -> None:
        self.stats.add({"corrupt": count})

    def feed(self, name: str, *, max_entries: int, sync_interval: float) -> SharedFeed:
        return SharedFeed(self.store, self.namespace, name, max_entries=max_entries, sync_interval=sync_interval)

    def push_recent(self, name: str, record: bytes, keep: int) -> None:
        self.store.push_recent(self.namespace, name, record, keep)

    def snapshots(self, feed: str, directory: str | None) -> SnapshotShelf:
        from .store.snapshots import SnapshotShelf, host_root

        root = Path(directory) if directory else host_root(self.store)
        return SnapshotShelf(self.store, self.namespace, feed, root)

    def invalidate(self, key: str) -> None:
        self.store.delete(self.namespace, key)
        self.invalidations.record(key)

    # -- near matches -----------------------------------------------------------------------

    def semantic_wanted(self, request: Request) -> bool:
        return self.semantic_options is not None and request.kind == "generation" and SEMANTIC_ON.get()

    def perceptual_wanted(self, request: Request) -> bool:
        """Vision requests whose images are all at hand (not keyed by URL only)."""
        return (self.vision_options.perceptual and PERCEPTUAL_ON.get() and bool(request.inputs)
                and not any(image.keyed_by_url for image in request.inputs))

    def near_wanted(self, request: Request) -> bool:
        return self.semantic_wanted(request) or self.perceptual_wanted(request)

    def near(self, request: Request) -> Hit | None:
        """After an exact miss: an entry made for a request that asks for the same thing in
        other words (semantic) or about a copy of the same picture (perceptual), stored under
        this request's key too (still counted as the match that made the alias). Raises
        ImageError if an input image of a vision request cannot be read."""
        if self.perceptual_wanted(request):
            return self._perceptual_hit(request)
        if self.semantic_wanted(request):
            return self._semantic_hit(request)
        return None

    async def embed_ahead(self, request: Request) -> None:
        """From a coroutine, before :meth:`near` runs in a worker thread: embed the request's
        prompt batched with the other coroutines' (see
        :meth:`SemanticMatcher.embed_ahead <imgcache.match.semantic.matcher.SemanticMatcher.embed_ahead>`).
        Only once the matcher exists (the first lookup creates it, in a thread); a failure is
        logged and left to :meth:`near`, which embeds again."""
        matcher = self._semantic if self.semantic_wanted(request) else None
        if matcher is None:
            return
        try:
            await matcher.embed_ahead(request)
        except Exception as exc:  # an embedder that fails: near() meets it again and decides
            log.debug("imgcache: embedding ahead failed for %s: %r", request.key[:12], exc)

    def _alias(self, request: Request, hit: Hit, match: str, matched: dict[str, Any]) -> Hit | None:
        """Store ``hit`` under ``request``'s key as a ``match`` hit; None if the stored entry
        was made for a request of another scope (the indexes never cross scopes; a damaged
        feed record must not make them)."""
        if not manifests.same_scope(hit.manifest, request):
            log.warning("imgcache: index proposed %s for a request of another scope; ignored",
                        matched.get("key", "?")[:12])
            self.corrupt()
            return None
        alias = manifests.alias(request, hit.manifest, match, matched)
        self.store.put(self.namespace, request.key, alias, hit.blobs, blobs_stored=True)
        return Hit(alias, hit.blobs, hit.tier)

    def _perceptual_hit(self, request: Request) -> Hit | None:
        matcher = self.perceptual
        if matcher is None:
            return None
        try:
            found = matcher.find(request)
        except ImportError as exc:  # a part of the vision stack the probe did not reach
            self.perceptual_off(describe(exc))
            return None
        except ImageError:
            raise
        except Exception as exc:  # a broken index or feed costs the near match, never the call
            log.warning("imgcache: perceptual matching failed for %s: %r", request.key[:12], exc)
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
        for proposal in self.semantic_call(matcher.propose, request) or []:
            if not proposal.verdict.same:
                continue
            hit = self.get(proposal.candidate.key)
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

    def index(self, request: Request, until: float = 0.0) -> None:
        """Add a request whose result was just stored to the near-match indexes (``until``:
        when its entry expires at the latest; 0: never)."""
        matcher = self.semantic if self.semantic_wanted(request) else None
        if matcher is not None:
            self.semantic_call(lambda r: matcher.add(r, until), request)
        perceptual = self.perceptual if self.perceptual_wanted(request) else None
        if perceptual is not None:
            try:
                perceptual.add(request, until)
            except ImportError as exc:
                self.perceptual_off(describe(exc))

    def fingerprints(self, request: Request) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        """What a vision entry stores of its images (their digests and fingerprint blobs);
        nothing when perceptual matching is off. Raises ImageError for an unreadable image."""
        perceptual = self.perceptual if self.perceptual_wanted(request) else None
        if perceptual is None:
            return [], {}
        try:
            return perceptual.stored_form(request)
        except ImportError as exc:  # the vision stack failed after the probe: keyed by bytes only
            self.perceptual_off(describe(exc))
            return [], {}

    # -- paraphrases in flight ---------------------------------------------------------------

    def similar_item(self, request: Request) -> tuple[SemanticMatcher, str, Any] | None:
        """How a generation request about to call upstream compares with the others in flight
        (see :meth:`similar_flight`); None without semantic matching."""
        matcher = self.semantic if self.semantic_wanted(request) else None
        found = None if matcher is None else self.semantic_call(matcher.in_flight, request)
        return None if found is None else (matcher, *found)  # type: ignore[misc]

    @contextmanager
    def similar_flight(self, request: Request, item: tuple[SemanticMatcher, str, Any] | None
                       ) -> Iterator[Pending | None]:
        """Single-flight by meaning: the call of a request that asks for the same thing in
        other words, already in flight in this process (wait for it, then match its stored
        result), or None: this request's call is the one in flight until the block ends."""
        if item is None:
            yield None
            return
        matcher, scope, flying = item
        with self.similar_flights.lead_or_join(scope, request.key, flying, matcher.same_in_flight) as pending:
            yield pending

    # -- the matchers, created on first use ---------------------------------------------------

    @property
    def semantic(self) -> SemanticMatcher | None:
        """The semantic matcher (the model loads on the first lookup). None when semantic
        matching is off: by configuration, or because its stack (the ``semantic`` extra) is
        missing or broken in this process (see :mod:`imgcache.match.optional`)."""
        options = self.semantic_options
        if options is None:
            return None
        if self._semantic is None:
            missing = semantic_missing(options.embedder)  # probed once per process
            if missing is not None:
                self.semantic_off(missing)
                return None
        with self._matchers_lock:
            if self._semantic is None:
                try:
                    from .match.semantic import SemanticMatcher

                    self._semantic = SemanticMatcher(self, options)
                except ImportError as exc:
                    self.semantic_off(describe(exc))
                    return None
        return self._semantic

    @property
    def perceptual(self) -> PerceptualMatcher | None:
        """The perceptual matcher. None with ``VisionOptions(perceptual=False)`` or when the
        ``vision`` extra is missing or broken in this process: images are then matched by
        their bytes only (said once in the log)."""
        if not self.vision_options.perceptual:
            return None
        if self._perceptual is None:
            missing = vision_missing()  # probed once per process
            if missing is not None:
                self.perceptual_off(missing)
                return None
        with self._matchers_lock:
            if self._perceptual is None:
                try:
                    from .match.perceptual import PerceptualMatcher

                    self._perceptual = PerceptualMatcher(self, self.vision_options)
                except ImportError as exc:
                    self.perceptual_off(describe(exc))
                    return None
        return self._perceptual

    def semantic_off(self, reason: str) -> None:
        """Semantic matching cannot run here (its stack is missing or broken): exact only."""
        self.semantic_options = None
        warn_once("semantic", reason)

    def perceptual_off(self, reason: str) -> None:
        """Perceptual matching cannot run here: images are keyed by their bytes only."""
        if self.vision_options.perceptual:
            self.vision_options = dataclasses.replace(self.vision_options, perceptual=False)
        warn_once("vision", reason)

    def semantic_call(self, method: Callable[[Request], T], request: Request) -> T | None:
        """Semantic matching that fails costs semantic matching, never the caller's call."""
        try:
            return method(request)
        except ImportError as exc:  # the stack (or the model) failed after the probe: off for good
            self.semantic_off(describe(exc))
        except Exception as exc:  # a broken embedder or feed
            log.warning("imgcache: semantic matching failed for %s: %r", request.key[:12], exc)
        return None

    def recent_semantic_hits(self) -> list[dict[str, Any]]:
        """The latest semantic hits of every process sharing the Redis (or directory)."""
        return read_recent_hits(self.store, self.namespace)

    def index_snapshots(self) -> dict[str, dict[str, Any]]:
        """The newest round of each index's snapshots (see :mod:`imgcache.store.snapshots`),
        by feed; an index with none is left out."""
        found = {}
        for feed in (SEMANTIC_FEED, PERCEPTUAL_FEED):
            shelved = self.snapshots(feed, None).rounds()
            if shelved.published:
                newest = shelved.published[0]
                found[feed] = {"position": newest.position, "written_at": newest.at, "scopes": len(newest.scopes),
                               "usable": bool(shelved.rounds) and shelved.rounds[0] == newest,
                               "reported_bad": len(shelved.bad)}
        return found
