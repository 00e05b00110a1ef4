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

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import codec
from ..errors import CorruptData, TierError
from ..stats import MATCHES, Stats
from .base import MISSING, Tier, blob_key, entry_key, log_corrupt
from .memory import MemoryTier, deep_size

log = logging.getLogger("imgcache")
T = TypeVar("T")
MANIFEST_VERSION = 1


class _Failed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILED"


FAILED = _Failed()
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


@dataclass(frozen=True)
class Hit:
    manifest: dict[str, Any]
    blobs: dict[str, bytes]
    tier: str
    """The slowest tier that served part of the hit."""


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
        self._pool = ThreadPoolExecutor(background_workers, thread_name_prefix="imgcache-write")
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._max_background = max_background

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

    def shared_store(self) -> Any:
        """Where counters and feeds shared between processes live: Redis if it is up,
        else the local directory, else None."""
        return self.available("redis") or self.available("disk")

    def available(self, name: str) -> Tier | None:
        """The tier called ``name`` if it is configured and its breaker is closed."""
        for tier in self.tiers:
            if tier.name == name and self.breakers[name].closed:
                return tier
        return None

    # -- reading ----------------------------------------------------------------------------

    def get_memory(self, namespace: str, key_hex: str) -> Hit | None:
        """The entry if the in-process memory tier holds it: no I/O, safe on an event loop."""
        if self.memory is None:
            return None
        ekey = entry_key(namespace, key_hex)
        hit = self.memory.get(ekey)
        if hit is MISSING:
            return None
        expires = hit.manifest["expires"]
        if expires is not None and expires <= time.time():
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
                manifest = parse_manifest(raw, key_hex)
            except CorruptData:
                continue
            if manifest["expires"] is None or manifest["expires"] > now:
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
                manifest = parse_manifest(raw, key_hex)
            except CorruptData as exc:
                self.corrupt(exc)
                self._background(tier, tier.delete, ekey)
                continue
            expires = manifest["expires"]
            if expires is not None and expires <= now:
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
        raw = dump_manifest(manifest)
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
            if tier.shared and written and len(fits) == len(blobs) and self.breakers[tier.name].closed:
                shared_complete = True

    def _fits(self, tier: Tier, blob: bytes) -> bool:
        limit = self.max_blob_bytes.get(tier.name)
        return limit is None or len(blob) <= limit

    def rewrite_manifest(self, namespace: str, key_hex: str, manifest: dict[str, Any]) -> None:
        """Store an updated manifest (a longer lifetime) everywhere, off the caller's path."""
        raw = dump_manifest(manifest)
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


def dump_manifest(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode()


_DIGEST = re.compile(r"[0-9a-f]{64}")
_RESULT_TYPES = frozenset({"bytes", "str", "json"})
_NUMBER_FIELDS = ("created", "ttl", "expires", "max_expires", "cost_usd", "elapsed")


def _number_or_none(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and math.isfinite(value))


def parse_manifest(raw: bytes, key_hex: str) -> dict[str, Any]:
    """Parse and check a manifest read back from a tier: its whole shape, since everything in
    it came from a shared store. Anything off is CorruptData (a miss), never a caller's error."""
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise CorruptData("manifest", f"entry {key_hex[:12]} does not parse: {exc}") from exc
    result = manifest.get("result") if isinstance(manifest, dict) else None
    ok = (
        isinstance(result, dict)
        and manifest.get("v") == MANIFEST_VERSION
        and manifest.get("key") == key_hex
        and result.get("type") in _RESULT_TYPES
        and isinstance(result.get("body"), str)
        and _DIGEST.fullmatch(result["body"]) is not None
        and isinstance(result.get("blobs"), list)
        and all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in result["blobs"])
        and all(_number_or_none(manifest.get(name)) for name in _NUMBER_FIELDS)
        and type(manifest.get("hits", 0)) is int
        and manifest.get("match", "exact") in MATCHES
        and _images_ok(manifest.get("images", []))
    )
    if not ok:
        raise CorruptData("manifest", f"entry {key_hex[:12]} is not a valid manifest for its key")
    return manifest  # type: ignore[no-any-return]


def _images_ok(images: Any) -> bool:
    """A vision entry's ``images``: per input image its digest and its fingerprint blob's."""
    return isinstance(images, list) and all(
        isinstance(image, dict) and all(isinstance(image.get(name), str) and _DIGEST.fullmatch(image[name])
                                        for name in ("sha256", "fp"))
        for image in images)


def remaining_ttl(manifest: Mapping[str, Any], *, blob: bool = False) -> float | None:
    """Seconds a manifest (or, with ``blob``, its blobs: until the lifetime cap) has left."""
    deadline = manifest.get("max_expires") if blob else manifest.get("expires")
    return None if deadline is None else deadline - time.time()
