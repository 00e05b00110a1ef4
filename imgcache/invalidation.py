"""Invalidations that reach every copy of a result, in every process.

A result can be held in more places than its request's entry: the in-process memory tier of
every process that read it, and the *aliases* that semantic and perceptual matches stored under
other requests' keys (copies of its manifest, so that their repeats are exact hits).
:meth:`~imgcache.Cache.delete` (``invalidate`` on a decorated function) therefore removes the
entry from every tier and records ``{"k": key, "t": time}`` on the namespace's shared
``invalidated`` feed (:class:`~imgcache.store.feed.SharedFeed`: a Redis stream, or a file in
the local directory). Each process reads the feed before it reads a shared tier and in the
background (at most once per ``sync_interval``), and refuses a hit whose result was made for an
invalidated request before its invalidation: the entry itself from a memory tier that still
holds it, and any alias of it. A result made after the invalidation (the request asked again)
is served, and so are its new aliases.

What a process remembers is bounded. An invalidation older than the longest lifetime an entry
can have (``max_age``: the cache's ttl times its extension cap) is forgotten, which costs
nothing: every copy made before it has expired (unless stored with a longer ``ttl`` of its own
through :meth:`~imgcache.Cache.store_result`, or by a process configured with a longer ttl:
such a copy can be served again once the invalidation is forgotten). Beyond
:data:`MAX_REMEMBERED` invalidations the oldest learnt are forgotten too, a quarter at a time;
then a copy made before a forgotten invalidation (in a memory tier that still holds it, or an
alias) can be served again until it expires. The entry itself went from every tier when it
was invalidated, so it is not among those copies.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._vocabulary import HEX_ID
from .manifest import made_for
from .store.feed import SharedFeed

if TYPE_CHECKING:
    from .store.tiered import TieredStore

FEED = "invalidated"
MAX_RECORDS = 100_000
"""Invalidations a Redis stream keeps (the oldest are trimmed); the file keeps them all."""
MAX_REMEMBERED = 100_000
"""Invalidations a process remembers at most (the oldest learnt are forgotten)."""
GENERATIONS = 4
"""What the remembered invalidations are split in: the oldest is forgotten whole."""


class Invalidations:
    """One namespace's invalidated requests, shared through a feed.

    Remembered as request key (its 32-byte digest) -> when, in up to :data:`GENERATIONS`
    dicts, newest first. A generation takes a quarter of ``max_remembered`` and spans at most
    ``max_age / 2`` seconds; the oldest is dropped whole, in O(1), when there are more than
    four or when all it holds is older than ``max_age``. :meth:`stale` reads them without
    the lock (the tuple is replaced, never changed; dict lookups are atomic).
    """

    def __init__(self, store: TieredStore, namespace: str, *, sync_interval: float,
                 max_age: float | None = None, max_remembered: int = MAX_REMEMBERED) -> None:
        self._feed = SharedFeed(store, namespace, FEED, max_entries=MAX_RECORDS, sync_interval=sync_interval)
        self.max_age = max_age
        """Seconds after which an invalidation is forgotten (None: only beyond the bound)."""
        self._per_generation = max(1, max_remembered // GENERATIONS)
        self._generations: tuple[dict[bytes, float], ...] = ()
        self._spans: list[list[float]] = []  # per generation: [oldest, newest] time it holds
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Invalidations remembered (one re-invalidated later may count twice)."""
        return sum(len(generation) for generation in self._generations)

    def record(self, key: str) -> None:
        """Invalidate the results made for ``key`` until now, here and in every process."""
        at = time.time()
        self._note(key, at)
        self._feed.append([json.dumps({"k": key, "t": at}, separators=(",", ":")).encode()])

    def catch_up(self) -> None:
        """Read the invalidations other processes recorded since the last read, at most once
        per sync interval (I/O: never on an event loop); forget those past ``max_age``."""
        self._feed.sync(self._read)
        if self.max_age is not None and self._generations:
            with self._lock:
                self._forget(time.time())

    def active(self) -> bool:
        """Whether any invalidation is known here (when none is, nothing is stale)."""
        return bool(self._generations)

    def stale(self, manifest: Mapping[str, Any]) -> bool:
        """Whether ``manifest`` holds a result made for a request invalidated since (as far
        as this process has caught up and remembers; no I/O, no lock)."""
        generations = self._generations
        if not generations:
            return False
        key, made = made_for(manifest)
        try:
            at = _latest(generations, bytes.fromhex(key))
        except ValueError:  # not a key: nothing was invalidated under it
            return False
        return at is not None and made <= at

    def _read(self, records: list[bytes]) -> int:
        """Take in records read from the feed; anything malformed is skipped."""
        taken = 0
        for raw in records:
            try:
                record = json.loads(raw)
                key, at = record["k"], record["t"]
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(key, str) and HEX_ID.fullmatch(key) and type(at) in (int, float) and math.isfinite(at):
                self._note(key, float(at))
                taken += 1
        return taken

    def _note(self, key: str, at: float) -> None:
        now = time.time()
        if self.max_age is not None and at < now - self.max_age:
            return  # every copy made before it has expired
        digest = bytes.fromhex(key)
        with self._lock:
            known = _latest(self._generations, digest)
            if known is not None and known >= at:
                return  # read back from the feed, or older news
            spans = self._spans
            if not spans or len(self._generations[0]) >= self._per_generation or (
                    self.max_age is not None and at - spans[0][0] > self.max_age / 2):
                self._generations = ({}, *self._generations)
                spans.insert(0, [at, at])
            self._generations[0][digest] = at
            spans[0][0], spans[0][1] = min(spans[0][0], at), max(spans[0][1], at)
            self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop the oldest generation while there are too many or all it holds is past
        ``max_age`` (under the lock)."""
        cutoff = None if self.max_age is None else now - self.max_age
        while self._spans and (len(self._spans) > GENERATIONS
                               or (cutoff is not None and self._spans[-1][1] < cutoff)):
            self._generations = self._generations[:-1]
            self._spans.pop()


def _latest(generations: tuple[dict[bytes, float], ...], digest: bytes) -> float | None:
    """When ``digest`` was last invalidated: newer generations hold later times."""
    for generation in generations:
        at = generation.get(digest)
        if at is not None:
            return at
    return None
