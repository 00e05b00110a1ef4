"""Invalidations that reach every copy of a result, in every process.

A result can be held in more places than its request's entry: the in-process memory tier of
every process that read it, and the *aliases* that semantic and perceptual matches stored under
other requests' keys (copies of its manifest, so that their repeats are exact hits).
:meth:`~imgcache.Cache.delete` (``invalidate`` on a decorated function) therefore removes the
entry from every tier and records ``{"k": key, "t": time}`` on the namespace's shared
``invalidated`` feed (:class:`~imgcache.match.feed.SharedFeed`: a Redis stream, or a file in
the local directory). Each process reads the feed before it reads a shared tier and in the
background (at most once per ``sync_interval``), and refuses a hit whose result was made for an
invalidated request before its invalidation: the entry itself from a memory tier that still
holds it, and any alias of it. A result made after the invalidation (the request asked again)
is served, and so are its new aliases.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .match.feed import SharedFeed
from .store.base import HEX_ID

if TYPE_CHECKING:
    from .store.tiered import TieredStore

FEED = "invalidated"
MAX_RECORDS = 100_000
"""Invalidations a Redis stream keeps (the oldest are trimmed); the file keeps them all."""


def made_for(manifest: Mapping[str, Any]) -> tuple[str, float]:
    """(key, created) of the request a stored result was made for: the entry's own for an
    exact entry; for an alias, the matched entry's (as the alias recorded it)."""
    created = manifest.get("created")
    made = float(created) if isinstance(created, (int, float)) else 0.0
    matched = manifest.get("matched")
    if manifest.get("match", "exact") != "exact" and isinstance(matched, Mapping):
        key, origin_created = matched.get("key"), matched.get("created")
        if isinstance(key, str):
            # aliases stored before matched["created"] existed: the alias's own time (later)
            return key, float(origin_created) if isinstance(origin_created, (int, float)) else made
    return str(manifest.get("key")), made


class Invalidations:
    """One namespace's invalidated requests (key -> when), shared through a feed."""

    def __init__(self, store: TieredStore, namespace: str, *, sync_interval: float) -> None:
        self._feed = SharedFeed(store, namespace, FEED, max_entries=MAX_RECORDS, sync_interval=sync_interval)
        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, key: str) -> None:
        """Invalidate the results made for ``key`` until now, here and in every process."""
        at = time.time()
        self._note(key, at)
        self._feed.append([json.dumps({"k": key, "t": at}, separators=(",", ":")).encode()])

    def catch_up(self) -> None:
        """Read the invalidations other processes recorded since the last read, at most once
        per sync interval (I/O: never on an event loop)."""
        self._feed.sync(self._read)

    def active(self) -> bool:
        """Whether any invalidation is known here (when none is, nothing is stale)."""
        return bool(self._at)

    def stale(self, manifest: Mapping[str, Any]) -> bool:
        """Whether ``manifest`` holds a result made for a request invalidated since (as far
        as this process has caught up; no I/O)."""
        if not self._at:
            return False
        key, made = made_for(manifest)
        at = self._at.get(key)
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
        with self._lock:
            self._at[key] = max(self._at.get(key, at), at)
