"""Read-through, promotion, write-through and fault handling over a list of tiers.

Tiers are ordered fastest first (memory, disk, Redis, S3). Reading an entry walks them in
order; the first tier holding a valid, unexpired manifest wins, its blobs are fetched from
whichever tiers hold them (every blob read back is checked against its sha256), and what
was found is promoted into the faster tiers. A blob that fails its digest is never
served: it counts as corrupt, the next tier is tried, and the bad copy is overwritten with
a good one when one is found (repair).

Every tier call goes through the tier's :class:`Breaker`: a failing tier is skipped for a
cool-down while a background probe waits for it to answer again, so a dead tier costs one
timeout, then nothing, and is used again once it is back. Bad data at one key
(:class:`~imgcache.errors.CorruptData`) is not a failing tier: it is counted as ``corrupt``
and costs that key only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import codec
from .._memo import deep_size
from .._vocabulary import Sentinel
from ..errors import CorruptData, TierError, TierUnavailable
from ..manifest import Hit, dump, expired, parse, remaining_ttl
from ..stats import Stats
from .base import (
    FAILED,
    MISSING,
    SCOPES,
    BlobUrls,
    Leases,
    Ledgers,
    Mutexes,
    RateBuckets,
    Scannable,
    Secrets,
    SharedCounters,
    SharedFeeds,
    Tier,
    blob_key,
    entry_key,
    log_corrupt,
)
from .memory import MemoryTier

if TYPE_CHECKING:
    from .claims import GuardedClaims
    from .ledger import GuardedLedger
    from .prune import PruneReport
    from .rate import SharedBuckets

log = logging.getLogger("imgcache")
T = TypeVar("T")
C = TypeVar("C")
_Failed = Sentinel
"""What :meth:`TieredStore.guarded` returns when the tier was skipped or failed."""
_HIT_BYTES = 360
"""A :class:`Hit` object and its attribute dict (what they refer to is counted apart)."""


class Breaker:
    """Circuit breaker for one tier.

    Closed: calls go through. After a failure it opens: calls are skipped (the tier is
    treated as a miss) and a background probe pings the tier after ``cooldown`` seconds,
    doubling up to ``max_cooldown`` while it keeps failing, and closes the breaker once the
    tier answers. Callers never pay for the probe.
    """

    def __init__(self, tier: Tier, *, cooldown: float = 0.5, max_cooldown: float = 15.0) -> None:
        self.tier = tier
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._open = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return not self._open

    def trip(self, exc: BaseException) -> None:
        with self._lock:
            if self._open:
                return
            self._open = True
        log.warning("imgcache: %s tier failed (%s); skipping it until it answers again", self.tier.name, exc)
        self._schedule(self.cooldown)

    def _schedule(self, delay: float) -> None:
        timer = threading.Timer(delay, self._probe, args=(delay,))
        timer.daemon = True
        timer.start()

    def _probe(self, delay: float) -> None:
        try:
            self.tier.ping()
        except Exception:
            self._schedule(min(delay * 2, self.max_cooldown))
            return
        with self._lock:
            self._open = False
        log.warning("imgcache: %s tier is back", self.tier.name)


class TieredStore:
    """Entries and blobs over an in-process memory tier and ordered byte tiers.

    The memory tier holds whole decoded entries (:class:`Hit` objects: manifest parsed,
    blobs attached), so a memory hit is one dictionary lookup; the byte tiers (disk, Redis,
    S3) hold manifests and blobs as bytes under their logical keys.
    """

    def __init__(
        self,
        memory: MemoryTier | None,
        tiers: Sequence[Tier],
        stats: Stats,
        *,
        max_blob_bytes: Mapping[str, int | None] | None = None,
        background_workers: int = 4,
        max_background: int = 256,
    ) -> None:
        self.memory = memory
        self.tiers = list(tiers)
        self.breakers = {tier.name: Breaker(tier) for tier in self.tiers}
        self.stats = stats
        for tier in self.tiers:
            tier.corrupt_sink = self.corrupt  # what tiers repair themselves is counted too
        self.max_blob_bytes = dict(max_blob_bytes or {})
        self._offering: dict[type[Any], list[Tier]] = {
            capability: [tier for tier in self.tiers if isinstance(tier, capability)]
            for capability in (SharedCounters, SharedFeeds, Mutexes, BlobUrls, Secrets, Leases, RateBuckets,
                                                            Ledgers)}
        self._pool = ThreadPoolExecutor(background_workers, thread_name_prefix="imgcache-write")
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._max_background = max_background

    def health(self) -> dict[str, str]:
        """Each tier's state: ``up``, or ``down`` while its breaker is open."""
        return {name: "up" if name == "memory" or self.breakers[name].closed else "down"
                for name in self.tier_names}

    @property
    def tier_names(self) -> list[str]:
        return (["memory"] if self.memory is not None else []) + [tier.name for tier in self.tiers]

    # -- calls guarded by the breakers ------------------------------------------------------

    def guarded(self, tier: Tier, op: Callable[..., T], *args: Any) -> T | _Failed:
        """Run a tier operation; on TierError trip the breaker, count it, return FAILED.
        CorruptData (one bad key) is counted as corrupt and leaves the breaker closed."""
        breaker = self.breakers[tier.name]
        if not breaker.closed:
            return FAILED
        try:
            return op(*args)
        except CorruptData as exc:
            self.corrupt(exc)
            return FAILED
        except TierError as exc:
            self.stats.add({f"tier_errors.{tier.name}": 1})
            breaker.trip(exc)
            return FAILED

    def corrupt(self, exc: CorruptData) -> None:
        """Count bad data found at one key, and log it (once per key at WARNING)."""
        self.stats.add({"corrupt": 1})
        log_corrupt(exc)

    def capable(self, capability: type[C], *, all_up: bool = False) -> C | None:
        """The tier to use for a capability (see :mod:`imgcache.store.base`): among the tiers
        that offer it and are up (with ``all_up``, among all of them), the one that reaches
        widest (a fleet's Redis before a machine's directory), the first configured among
        equals; None if there is none."""
        best = None
        for tier in self._offering[capability]:
            if (all_up or self.breakers[tier.name].closed) and (best is None or SCOPES[tier.scope] > SCOPES[best.scope]):
                best = tier
        return best  # type: ignore[return-value]

    def _use(self, capability: type[Any], op: str, *args: Any, default: Any = FAILED) -> Any:
        """Call ``op`` of the tier chosen for ``capability``, guarded; ``default`` if there
        is none, FAILED if it failed."""
        tier = self.capable(capability)
        return default if tier is None else self.guarded(tier, getattr(tier, op), *args)

    # -- shared state: counters, feeds, locks, URLs, secrets ---------------------------------

    def shares(self) -> bool:
        """Whether counters and feeds reach other processes (a directory or Redis is up)."""
        return self.capable(SharedFeeds) is not None

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> bool:
        """Whether the deltas were added to the shared counters (False: nowhere, or failed)."""
        return self._use(SharedCounters, "add_counters", namespace, deltas) is not FAILED

    def read_counters(self, namespace: str) -> dict[str, float] | None:
        """The shared counters; None where nothing is shared (TierUnavailable if they could
        not be read)."""
        return self._read_shared(SharedCounters, "read_counters", namespace, what="the shared stats")

    def namespaces(self, limit: int) -> tuple[list[str], bool] | None:
        """The namespaces with shared counters, sorted, at most ``limit``, and whether there
        were more; None where nothing is shared (TierUnavailable if they could not be listed)."""
        found = self._read_shared(SharedCounters, "counter_namespaces", limit, what="the shared namespaces")
        return None if found is None else (sorted(found)[:limit], len(found) > limit)

    def _read_shared(self, capability: type[Any], op: str, *args: Any, what: str) -> Any:
        tier = self.capable(capability)
        if tier is None:
            return None
        found = self.guarded(tier, getattr(tier, op), *args)
        if found is FAILED:
            raise TierUnavailable(tier.name, f"{what} could not be read")
        return found

    def feed_tier(self) -> SharedFeeds | None:
        """The tier feeds are kept in now (a feed reader's cursor belongs to it)."""
        return self.capable(SharedFeeds)

    def home_feed_tier(self) -> SharedFeeds | None:
        """The tier feeds are kept in while every tier is up (the one rounds of index
        snapshots are written against)."""
        return self.capable(SharedFeeds, all_up=True)

    def append_records(self, namespace: str, feed: str, records: list[bytes], max_len: int) -> None:
        self._use(SharedFeeds, "append_records", namespace, feed, records, max_len, default=None)

    def read_records(self, tier: SharedFeeds, namespace: str, feed: str, cursor: str | None
                     ) -> tuple[list[bytes], str | None] | Sentinel:
        return self.guarded(tier, tier.read_records, namespace, feed, cursor)  # type: ignore[arg-type]

    def trim_records(self, tier: SharedFeeds, namespace: str, feed: str, below: str) -> None:
        """Drop the feed's records before position ``below`` (of ``tier``'s feed)."""
        self.guarded(tier, tier.trim_records, namespace, feed, below)  # type: ignore[arg-type]

    def push_recent(self, namespace: str, feed: str, record: bytes, keep: int) -> None:
        self._use(SharedFeeds, "push_recent", namespace, feed, record, keep, default=None)

    def read_recent(self, namespace: str, feed: str) -> list[bytes]:
        records = self._use(SharedFeeds, "read_recent", namespace, feed, default=[])
        return records if isinstance(records, list) else []

    def append_log(self, namespace: str, log: str, record: bytes, *, max_records: int, max_bytes: int) -> None:
        tier = self.capable(SharedFeeds)
        if tier is not None:
            self.guarded(tier, lambda: tier.append_log(namespace, log, record, max_records=max_records,
                                                       max_bytes=max_bytes))

    def read_log(self, namespace: str, log: str) -> list[bytes]:
        records = self._use(SharedFeeds, "read_log", namespace, log, default=[])
        return records if isinstance(records, list) else []

    def try_mutex(self, namespace: str, key_hex: str, timeout: float) -> Any:
        """The cross-process lock on an entry if it was free (now held), None if another
        process holds it, FAILED where there are no such locks or they failed."""
        return self._use(Mutexes, "try_mutex", entry_key(namespace, key_hex), timeout)

    def blob_url(self, namespace: str, data: bytes, lifetime: int) -> str | None:
        """A URL serving ``data`` for ``lifetime`` seconds from the widest-reaching tier that
        can give one (presigned S3 before a local file); None if none can."""
        key = blob_key(namespace, codec.digest(data))
        url = self._first_answer(BlobUrls, "blob_url", key, data, lifetime)
        return url if isinstance(url, str) else None

    def keep_secret(self, name: str, fresh: bytes) -> bytes | None:
        """The secret every process sharing a tier agrees on (the first one kept), in the
        widest-reaching tier that can keep it; None if there is nowhere to keep it."""
        secret = self._first_answer(Secrets, "keep_secret", name, fresh)
        return secret if isinstance(secret, bytes) else None

    def claims(self, namespace: str, scope: str, *, lease: float, refusal_ttl: float) -> GuardedClaims | None:
        """Claims of ``namespace`` for ``scope`` (see :mod:`imgcache.store.claims`) in the
        widest-reaching up tier that keeps them (Redis before a directory), their calls behind
        its breaker; None if no tier can keep them."""
        from .claims import GuardedClaims  # loaded by the jobs that use claims only

        tier = self.capable(Leases)
        if tier is None:
            return None
        made = tier.claims(namespace, scope, lease=lease, refusal_ttl=refusal_ttl)
        return GuardedClaims(made, lambda op: self.guarded(tier, op))  # type: ignore[arg-type]

    def rate_buckets(self, namespace: str, scope: str) -> SharedBuckets | None:
        """Token buckets of ``namespace`` for ``scope`` that every process sharing the
        widest-reaching up tier that keeps them draws from; None if none can. Their calls go
        through the tier's breaker and raise TierError when it fails or is down: the caller
        falls back to buckets of its own meanwhile."""
        from .rate import GuardedBuckets

        tier = self.capable(RateBuckets)
        if tier is None:
            return None
        return GuardedBuckets(tier.rate_buckets(namespace, scope), tier.name,  # type: ignore[attr-defined]
                              lambda op: self.guarded(tier, op))  # type: ignore[arg-type]

    def ledger(self, owner: str) -> GuardedLedger | None:
        """The spending ledger of ``owner`` (a namespace, or ``_shared``) in the widest-reaching
        up tier that keeps ledgers (Redis before a directory), behind its breaker: it raises
        TierError when that tier fails or is down (the budget keeps its own books meanwhile);
        None if no tier can keep one."""
        from .ledger import GuardedLedger

        tier = self.capable(Ledgers)
        if tier is None:
            return None
        return GuardedLedger(tier.ledger(owner), tier.name,  # type: ignore[attr-defined]
                             lambda op: self.guarded(tier, op))  # type: ignore[arg-type]

    def _first_answer(self, capability: type[Any], op: str, *args: Any) -> Any:
        """``op`` of each up tier offering ``capability``, widest first, until one answers."""
        tiers = [t for t in self._offering[capability] if self.breakers[t.name].closed]
        for tier in sorted(tiers, key=lambda t: -SCOPES[t.scope]):
            found = self.guarded(tier, getattr(tier, op), *args)
            if found is not FAILED and found is not None:
                return found
        return None

    def prune(self, **policy: Any) -> PruneReport | None:
        """Prune the tier that can be scanned (the local directory) as
        :func:`imgcache.store.prune.prune` says; None if no tier can be. TierError raised."""
        from .prune import prune

        tier = next((t for t in self.tiers if isinstance(t, Scannable)), None)
        return None if tier is None else prune(tier, **policy)

    # -- reading ----------------------------------------------------------------------------

    def get_memory(self, namespace: str, key_hex: str) -> Hit | None:
        """The entry if the in-process memory tier holds it: no I/O, safe on an event loop."""
        if self.memory is None:
            return None
        ekey = entry_key(namespace, key_hex)
        hit = self.memory.get(ekey)
        if hit is MISSING:
            return None
        if expired(hit.manifest):
            self.memory.delete(ekey)
            return None
        return hit  # type: ignore[no-any-return]

    def has_entry(self, namespace: str, key_hex: str) -> bool:
        """Whether a valid, unexpired manifest for the key is in any tier; no blob is read (a
        resumed prewarm over thousands of finished prompts downloads no image)."""
        if self.get_memory(namespace, key_hex) is not None:
            return True
        ekey = entry_key(namespace, key_hex)
        now = time.time()
        for tier in self.tiers:
            raw = self.guarded(tier, tier.get, ekey)
            if raw is FAILED or raw is MISSING:
                continue
            try:
                manifest = parse(raw, key_hex)
            except CorruptData:
                continue
            if not expired(manifest, now):
                return True
        return False

    def get(self, namespace: str, key_hex: str) -> Hit | None:
        """Find a valid entry in the fastest tier that holds one, promoting it upwards."""
        hit = self.get_memory(namespace, key_hex)
        if hit is not None:
            return hit
        ekey = entry_key(namespace, key_hex)
        now = time.time()
        for index, tier in enumerate(self.tiers):
            raw = self.guarded(tier, tier.get, ekey)
            if raw is FAILED or raw is MISSING:
                continue
            try:
                manifest = parse(raw, key_hex)
            except CorruptData as exc:
                self.corrupt(exc)
                self._background(tier, tier.delete, ekey)
                continue
            if expired(manifest, now):
                self._background(tier, tier.delete, ekey)
                continue
            found = self._fetch_blobs(namespace, codec.blob_digests(manifest["result"]), manifest)
            if found is None:
                return None  # blobs are content-addressed: slower manifests point at the same ones
            blobs, slowest = found
            self._promote(self.tiers[:index], ekey, raw, manifest)
            self._remember(ekey, manifest, blobs)
            return Hit(manifest, blobs, self.tiers[max(index, slowest)].name)
        return None

    def get_blobs(self, namespace: str, hit: Hit, digests: list[str]) -> dict[str, bytes] | None:
        """Blobs of an entry beyond its result's (fingerprints), each checked against its
        digest: from the hit itself when it holds them, else from the byte tiers."""
        held = {d: hit.blobs[d] for d in digests if d in hit.blobs}
        if len(held) == len(set(digests)):
            return held
        found = self._fetch_blobs(namespace, [d for d in digests if d not in held], hit.manifest)
        return None if found is None else {**held, **found[0]}

    def _fetch_blobs(
        self, namespace: str, digests: list[str], manifest: dict[str, Any]
    ) -> tuple[dict[str, bytes], int] | None:
        wanted = list(dict.fromkeys(digests))
        blobs: dict[str, bytes] = {}
        slowest = 0
        missing_from: dict[str, list[Tier]] = {d: [] for d in wanted}  # tiers to promote or repair
        for index, tier in enumerate(self.tiers):
            todo = [d for d in wanted if d not in blobs]
            if not todo:
                break
            values = self.guarded(tier, tier.get_many, [blob_key(namespace, d) for d in todo])
            if values is FAILED:
                values = [MISSING] * len(todo)
            for d, value in zip(todo, values):
                if value is MISSING:
                    missing_from[d].append(tier)
                    continue
                if codec.digest(value) != d:
                    self.corrupt(CorruptData(tier.name, f"blob {d[:12]} failed its digest"))
                    missing_from[d].append(tier)
                    continue
                blobs[d] = value
                slowest = max(slowest, index)
        if len(blobs) != len(wanted):
            return None
        ttl = remaining_ttl(manifest, blob=True)
        for d, tiers in missing_from.items():
            for tier in tiers:
                if self._fits(tier, blobs[d]):
                    self._write(tier, blob_key(namespace, d), blobs[d], ttl, background=True)
        return blobs, slowest

    def _promote(self, tiers: Iterable[Tier], ekey: str, raw: bytes, manifest: dict[str, Any]) -> None:
        ttl = remaining_ttl(manifest)
        for tier in tiers:
            self._write(tier, ekey, raw, ttl, background=True)

    def _remember(self, ekey: str, manifest: dict[str, Any], blobs: Mapping[str, bytes]) -> None:
        """Hold the entry in memory, counted as the bytes its objects take (the parsed manifest
        holds the whole request: a long prompt weighs more than its image)."""
        if self.memory is None:
            return
        ttl = remaining_ttl(manifest)
        if ttl is None or ttl > 0:
            held = dict(blobs)
            size = deep_size(manifest) + deep_size(held) + _HIT_BYTES
            self.memory.set_object(ekey, Hit(manifest, held, "memory"), size, ttl)

    # -- writing ----------------------------------------------------------------------------

    def put(
        self,
        namespace: str,
        key_hex: str,
        manifest: dict[str, Any],
        blobs: Mapping[str, bytes],
        *,
        blobs_stored: bool = False,
    ) -> None:
        """Write an entry and its blobs to every tier, blobs before the manifest
        (``blobs_stored``: they are there already, write the manifest only).

        A tier is written in the background when a faster shared tier already holds the whole
        entry (other processes can see it there); otherwise synchronously, so that the entry
        is visible to other processes by the time the caller's single-flight lock is released.
        """
        raw = dump(manifest)
        ekey = entry_key(namespace, key_hex)
        self._remember(ekey, manifest, blobs)
        entry_ttl, blob_ttl = remaining_ttl(manifest), remaining_ttl(manifest, blob=True)
        shared_complete = False
        for tier in self.tiers:
            fits = {d: b for d, b in blobs.items() if self._fits(tier, b)}
            background = shared_complete
            for d, data in {} if blobs_stored else fits.items():
                self._write(tier, blob_key(namespace, d), data, blob_ttl, background=background)
            if background:
                self._write(tier, ekey, raw, entry_ttl, background=True)
                continue
            written = self.guarded(tier, tier.set, ekey, raw, entry_ttl) is not FAILED
            if tier.scope != "process" and written and len(fits) == len(blobs) and self.breakers[tier.name].closed:
                shared_complete = True

    def _fits(self, tier: Tier, blob: bytes) -> bool:
        limit = self.max_blob_bytes.get(tier.name)
        return limit is None or len(blob) <= limit

    def rewrite_manifest(self, namespace: str, key_hex: str, manifest: dict[str, Any]) -> None:
        """Store an updated manifest (a longer lifetime) everywhere, off the caller's path."""
        raw = dump(manifest)
        ekey = entry_key(namespace, key_hex)
        if self.memory is not None:
            held = self.memory.get(ekey)
            if held is not MISSING:
                self._remember(ekey, manifest, held.blobs)
        ttl = remaining_ttl(manifest)
        for tier in self.tiers:
            self._write(tier, ekey, raw, ttl, background=True)

    def delete(self, namespace: str, key_hex: str, *, memory_only: bool = False) -> None:
        """Remove an entry's manifest from every tier (or only from this process's memory)."""
        if self.memory is not None:
            self.memory.delete(entry_key(namespace, key_hex))
        for tier in () if memory_only else self.tiers:
            self.guarded(tier, tier.delete, entry_key(namespace, key_hex))

    def _write(self, tier: Tier, key: str, value: bytes, ttl: float | None, *, background: bool) -> None:
        if ttl is not None and ttl <= 0:
            return
        if background:
            self._background(tier, tier.set, key, value, ttl)
        else:
            self.guarded(tier, tier.set, key, value, ttl)

    def _background(self, tier: Tier, op: Callable[..., Any], *args: Any) -> None:
        with self._pending_lock:
            future = None
            if len(self._pending) < self._max_background:  # else back-pressure: run it here
                future = self._pool.submit(self.guarded, tier, op, *args)
                self._pending.add(future)
        if future is None:
            self.guarded(tier, op, *args)
        else:
            future.add_done_callback(self._finished)  # may run at once: outside the lock

    def _finished(self, future: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for background writes queued so far."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._pending_lock:
                pending = list(self._pending)
            if not pending:
                return
            for future in pending:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    future.result(timeout=left)
                except Exception:
                    return

    def close(self) -> None:
        self.flush(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as exc:  # closing must not raise on the way out
                log.debug("imgcache: closing %s: %r", tier.name, exc)


def open_store(stats: Stats, *, memory_bytes: int, directory: Path | None, redis_url: str | None,
               s3_bucket: str | None, s3_endpoint_url: str | None, s3_prefix: str, file_mode: int,
               redis_max_blob_bytes: int | None) -> TieredStore:
    """The tiers a configuration names, fastest first; tier modules are imported only when used."""
    tiers: list[Tier] = []
    if directory is not None:
        from .disk import DiskTier

        tiers.append(DiskTier(directory, file_mode=file_mode))
    if redis_url:
        from .redis import RedisTier

        tiers.append(RedisTier(redis_url))
    if s3_bucket:
        from .s3 import S3Tier

        tiers.append(S3Tier(s3_bucket, endpoint_url=s3_endpoint_url, prefix=s3_prefix))
    # With S3 behind it, Redis keeps only small blobs; without, it must keep them all.
    if redis_max_blob_bytes is None and s3_bucket:
        redis_max_blob_bytes = 4 << 20
    return TieredStore(MemoryTier(memory_bytes) if memory_bytes else None, tiers, stats,
                       max_blob_bytes={"redis": redis_max_blob_bytes})
