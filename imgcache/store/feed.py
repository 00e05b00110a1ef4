"""A namespace's shared feed of index records, and one process's cursor into it.

Near-duplicate indexes (semantic, perceptual) live in each process's memory; what one process
adds must reach the others. Records travel through the shared store
(the tier that offers :class:`~imgcache.store.base.SharedFeeds` and reaches widest): a Redis
stream where Redis is configured, otherwise an append-only file in the local directory. A record is bytes (JSON by
convention, never pickled); a reader validates every record it gets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tiered import TieredStore

PAGE = 10_000
"""Records read per request while catching up."""


def position_after(position: str, other: str) -> bool:
    """Whether feed position ``position`` comes after ``other`` (Redis stream ids
    ``"ms-seq"``, or a file's byte offsets)."""
    def order(text: str) -> tuple[int, int]:
        first, _, second = text.partition("-")
        return int(first), int(second or 0)

    try:
        return order(position) > order(other)
    except ValueError:  # positions of different feeds: never taken as later
        return False


@dataclass
class _Cursor:
    tier: object
    position: str | None = None
    synced_at: float = 0.0


class SharedFeed:
    """Append records to the feed ``name`` of ``namespace``, and read those added since the
    last read. Tier failures are absorbed (the store's breakers count them): a record that
    could not be appended is simply not shared, a read that failed is retried later."""

    def __init__(self, store: TieredStore, namespace: str, name: str, *,
                 max_entries: int, sync_interval: float) -> None:
        self.store = store
        self.namespace = namespace
        self.name = name
        self.max_entries = max_entries
        self.sync_interval = sync_interval
        self._cursor: _Cursor | None = None
        self._lock = threading.Lock()

    def append(self, records: list[bytes]) -> None:
        if records:
            self.store.append_records(self.namespace, self.name, records, self.max_entries)

    def position(self) -> tuple[object, str | None] | None:
        """The tier read from and the position read up to, if this process has read."""
        with self._lock:
            cursor = self._cursor
            return None if cursor is None else (cursor.tier, cursor.position)

    @property
    def reading_to(self) -> str | None:
        """Where the page being handled ends, for a ``handle`` that :meth:`sync` calls (the
        cursor moves past a page before its records are handled): every record of the page
        is at or before it. None while reading a fallback tier's feed (Redis down)."""
        cursor = self._cursor
        if cursor is None or cursor.tier is not self.store.home_feed_tier():
            return None  # a fallback's positions do not compare with the rounds' (Redis stream ids)
        return cursor.position

    def start_at(self, position: str) -> bool:
        """Read on from ``position`` of the current tier's feed (an index snapshot covers
        what is before it); only before the first read. Whether it was taken."""
        tier = self.store.feed_tier()
        with self._lock:
            if tier is None or self._cursor is not None:
                return False
            self._cursor = _Cursor(tier, position or None)
            return True

    def restart_at(self, position: str | None, then: Callable[[], None]) -> None:
        """Read on from ``position`` (None: the start) of the current tier's feed, calling
        ``then`` (which resets what the records fed) before any other read."""
        tier = self.store.feed_tier()
        with self._lock:
            self._cursor = None if tier is None else _Cursor(tier, position)
            then()

    def sync(self, handle: Callable[[list[bytes]], int], *, force: bool = False) -> int:
        """Pass the records added since the last sync to ``handle`` (page by page), at most
        once per ``sync_interval`` unless ``force``; returns what ``handle`` returned, summed.
        A process reads its own records back too: ``handle`` must be idempotent."""
        tier = self.store.feed_tier()
        if tier is None:
            return 0
        with self._lock:
            cursor = self._cursor
            if cursor is None or cursor.tier is not tier:  # a cursor is a position in one tier's feed
                cursor = self._cursor = _Cursor(tier)
            elif not force and time.monotonic() - cursor.synced_at < self.sync_interval:
                return 0
            handled = 0
            while True:
                page = self.store.read_records(tier, self.namespace, self.name, cursor.position)
                if not isinstance(page, tuple):  # the tier failed: try again on a later lookup
                    break
                records, cursor.position = page
                handled += handle(records)
                if len(records) < PAGE:
                    break
            cursor.synced_at = time.monotonic()
            return handled
