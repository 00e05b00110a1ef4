"""What a near-match index may read and share: the stored entries the cache's lookup lets it
see (never a result invalidated after it was made), and feeds to the other processes.

The lookup (:class:`imgcache._lookup.Lookup`) hands each matcher an :class:`Entries`; a matcher
never reaches the store or its tiers itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..manifest import Hit
    from ..store.feed import SharedFeed
    from ..store.snapshots import SnapshotShelf


class Entries(Protocol):
    namespace: str

    def get(self, key: str) -> Hit | None:
        """The entry stored under ``key``, unless its result was invalidated."""

    def get_blobs(self, hit: Hit, digests: list[str]) -> dict[str, bytes] | None:
        """Blobs of an entry beyond its result's (fingerprints), each checked against its digest."""

    def corrupt(self, count: int = 1) -> None:
        """Count stored data that did not parse or verify (it costs the match, never the call)."""

    def feed(self, name: str, *, max_entries: int, sync_interval: float) -> SharedFeed:
        """The namespace's shared feed called ``name``."""

    def snapshots(self, feed: str, directory: str | None) -> SnapshotShelf:
        """Index snapshots of the namespace's feed ``feed``, kept on this host in ``directory``
        (None: the store's choice)."""

    def push_recent(self, name: str, record: bytes, keep: int) -> None:
        """Push onto the namespace's shared list of the newest ``keep`` records ``name``."""
