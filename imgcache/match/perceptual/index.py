"""A namespace's perceptual index: every scope's phashes, searched by Hamming radius.

It may stand on a snapshot of every scope that another process wrote (see :mod:`.mapped`
and :mod:`imgcache.match.rounds`): its rows are memory-mapped, shared by the processes of a
host, and the ones removed since it was written are masked here. Entries it lacks are this
process's own, in one :class:`~imgcache.match.perceptual.hamming.HammingIndex` per scope.
An entry is never proposed once removed or past when it expires at the latest.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..rounds import Removals
from .hamming import HammingIndex
from .mapped import ALL, MappedPhashes, OwnRows, write


class PerceptualIndex:
    """Scopes by id, standing on at most one snapshot of them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stand_on(None)

    def _stand_on(self, snapshot: MappedPhashes | None) -> None:
        """Start over on ``snapshot``, with no rows of this process's own."""
        self.snapshot = snapshot
        self._dead: np.ndarray | None = None  # snapshot rows removed since it was written
        self._snapshot_live = 0 if snapshot is None else snapshot.rows
        self._removed = Removals()
        self._own: dict[str, HammingIndex] = {}
        self._until: dict[tuple[str, str], float] = {}  # (scope, key) of own rows that expire: when, at the latest

    def __len__(self) -> int:
        return self.own_rows + self._snapshot_live

    @property
    def own_rows(self) -> int:
        """Entries this process holds itself (not in its snapshot); one that expired counts
        until the process stands on a newer snapshot."""
        return sum(len(index) for index in list(self._own.values()))

    @property
    def changed(self) -> bool:
        """Whether this process holds rows or removals its snapshot lacks."""
        return self.own_rows > 0 or self._dead is not None

    # -- entries ----------------------------------------------------------------------------

    def add_many(self, scope_id: str, items: list[tuple[str, int, float]]) -> None:
        """Add a scope's entries ``(key, phash, until)``: ``until`` is when the entry expires
        at the latest (its TTL fully extended; 0: never)."""
        with self._lock:
            self._add_locked(scope_id, items)

    def _add_locked(self, scope_id: str, items: list[tuple[str, int, float]]) -> None:
        found = _scope_rows(self.snapshot, scope_id, [key for key, _, _ in items])
        fresh: list[tuple[str, int]] = []
        batch: set[str] = set()  # new rows of this call, which a later item may store again
        own = self._own.get(scope_id)
        for at, (key, phash, expires) in enumerate(items):
            held_here = (scope_id, key)
            if key in batch or (own is not None and own.has(key)):
                # stored again: its lifetime may change (its hash may not, but a record says)
                old = self._until.get(held_here, 0.0)
                if old and expires:
                    self._until[held_here] = max(old, expires)
                else:
                    self._until.pop(held_here, None)
                fresh.append((key, phash))
                continue
            row = int(found[at])
            if row >= 0 and (self._dead is None or not self._dead[row]):
                held = float(self.snapshot.until[row])  # type: ignore[union-attr]
                if not held or (expires and expires <= held):
                    continue
                self._mark_dead(row)  # stored again to live longer: this process's row replaces it
            if expires:
                self._until[held_here] = expires
            batch.add(key)
            fresh.append((key, phash))
        if fresh:
            if own is None:
                own = self._own[scope_id] = HammingIndex()
            own.add_many(fresh)

    def remove(self, scope_id: str, key: str, read_at: str | None = None) -> bool:
        """Never propose ``key`` of ``scope_id`` again (until it is added anew); whether it
        was here. ``read_at``: where on the feed the removal was read (None: removed here)."""
        with self._lock:
            removed = self._remove_locked(scope_id, key)
            if removed or read_at is not None:  # a removal made here that removed nothing has no record
                self._removed.add(scope_id, key, read_at)
            return removed

    def _remove_locked(self, scope_id: str, key: str) -> bool:
        index = self._own.get(scope_id)
        if index is not None and index.remove(key):
            self._until.pop((scope_id, key), None)
            return True
        row = int(_scope_rows(self.snapshot, scope_id, [key])[0])
        if row < 0 or (self._dead is not None and self._dead[row]):
            return False
        self._mark_dead(row)
        return True

    def removals_lost_after(self, position: str) -> bool:
        return self._removed.lost_after(position)

    def _mark_dead(self, row: int) -> None:
        assert self.snapshot is not None
        if self._dead is None:
            self._dead = np.zeros(self.snapshot.rows, dtype=bool)
        self._dead[row] = True
        self._snapshot_live -= 1

    def search(self, scope_id: str, phash: int, radius: int) -> list[tuple[str, int]]:
        """Every live entry of the scope within ``radius`` bits of ``phash``, as ``(key,
        distance)``, nearest first."""
        if radius < 0:
            raise ValueError("radius must be >= 0")
        now = time.time()
        with self._lock:
            snapshot, dead, own, until = self.snapshot, self._dead, self._own.get(scope_id), self._until
        found: list[tuple[int, str]] = []
        if snapshot is not None:
            rows, distances = snapshot.search(scope_id, phash, radius)
            held = np.asarray(snapshot.until[rows])
            keep = ~((held > 0) & (held <= now))
            if dead is not None:
                keep &= ~dead[rows]
            found += [(distance, snapshot.keys.key(row))
                      for row, distance in zip(rows[keep].tolist(), distances[keep].tolist())]
        if own is not None:
            found += [(distance, key) for key, distance in own.search(phash, radius)
                      if not 0 < until.get((scope_id, key), 0.0) <= now]
        found.sort(key=lambda item: item[0])
        return [(key, distance) for distance, key in found]

    # -- snapshots (see :mod:`imgcache.match.rounds`) -------------------------------------------

    def scopes(self) -> list[tuple[str, PerceptualIndex]]:
        """What a round is written from: the whole index, as the one scope :data:`ALL`."""
        return [(ALL, self)] if self.snapshot is not None or self._own else []

    def stand_on(self, scope_id: str, snapshot: MappedPhashes, position: str) -> None:
        """Stand on a newer snapshot (of every scope: ``scope_id`` is :data:`ALL`), written as
        of feed ``position``, under one hold of the lock: what this process removed stays
        removed (a key removed and stored again included: the snapshot may hold its old
        entry), and its own rows the snapshot lacks (or holds to expire sooner) are kept,
        unless expired; the rest are dropped."""
        now = time.time()
        with self._lock:
            own = {scope: [(key, phash, self._until.get((scope, key), 0.0)) for key, phash in index.items()]
                   for scope, index in self._own.items()}
            removed = self._removed.after(position)
            dead = [row for scope, keys in removed.by_scope().items()
                    for row in _scope_rows(snapshot, scope, keys).tolist() if row >= 0]
            self._stand_on(snapshot)
            self._removed = removed
            for row in set(dead):
                self._mark_dead(row)
            for scope, items in own.items():
                self._add_locked(scope, [item for item in items if not 0 < item[2] <= now])

    def clear(self) -> None:
        with self._lock:
            self._stand_on(None)

    @staticmethod
    def open_snapshot(directory: Path) -> MappedPhashes:
        return MappedPhashes(directory)

    def write_snapshot(self, scope: PerceptualIndex, directory: Path) -> None:
        """The snapshot's rows still live and this process's own, in one new snapshot."""
        now = time.time()
        with self._lock:
            snapshot = self.snapshot
            live_base = None
            if snapshot is not None:  # removed or expired since it was written: left out of the next
                held = np.asarray(snapshot.until)
                live_base = ~((held > 0) & (held <= now))
                if self._dead is not None:
                    live_base &= ~self._dead
            own: dict[str, OwnRows] = {}
            for scope_id, index in self._own.items():
                items = [(k, h, self._until.get((scope_id, k), 0.0)) for k, h in index.items()]
                items = [item for item in items if not 0 < item[2] <= now]
                if items:
                    keys, hashes, until = zip(*items)
                    own[scope_id] = OwnRows(list(keys), list(hashes), list(until))
        write(directory, snapshot, live_base, own)

    @property
    def nbytes(self) -> int:
        """Private memory held in numpy arrays (a snapshot's mapped pages are the page
        cache's, shared between processes)."""
        dead = self._dead.nbytes if self._dead is not None else 0
        return dead + sum(index.nbytes for index in list(self._own.values()))


def _scope_rows(snapshot: MappedPhashes | None, scope_id: str, keys: list[str]) -> np.ndarray:
    """Each key's row among the snapshot's rows of ``scope_id``, or -1 (a key of another
    scope is not this scope's, whatever a record says; after a change of scope ids one key
    may have a row in each)."""
    if snapshot is None:
        return np.full(len(keys), -1, dtype=np.int64)
    bounds = snapshot.scope(scope_id)
    if bounds is None:
        return np.full(len(keys), -1, dtype=np.int64)
    return snapshot.keys.find(keys, within=bounds[:2])
