"""Rounds of semantic index snapshots: map the newest on start, write one when it is due
(see :mod:`imgcache.store.snapshots` for where they live and why).

* On its first sync a process maps every scope of the newest usable round and reads the
  feed on from the round's position (falling back to the round before, then to the whole
  feed, when a snapshot cannot be had whole).
* Every :data:`CHECK_INTERVAL`, off the caller's path, it looks at the rounds. The holder of
  the lease writes a new round once :attr:`SemanticOptions.snapshot_rows` entries are held
  outside any snapshot (or the newest round was reported bad, or is old): every scope's
  snapshot rows plus its own, written with all cores, the unchanged scopes reused as they
  are; then it stands on the new round and trims the feed below the round before. The other
  processes stand on a newer round once they hold that many rows of their own.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...store.snapshots import Round, Shelved
from .mapped import MappedScope, new_graph, write

if TYPE_CHECKING:
    from ...store.feed import SharedFeed
    from ...store.snapshots import SnapshotShelf
    from .index import ScopeIndex, SemanticIndex

log = logging.getLogger("imgcache")

CHECK_INTERVAL = 30.0
LEASE_SECONDS = 1800.0
_STOPPING = threading.Event()
atexit.register(_STOPPING.set)


class Rounds:
    """One semantic matcher's snapshots."""

    def __init__(self, shelf: SnapshotShelf, index: SemanticIndex, feed: SharedFeed,
                 read_feed: Callable[[], object], *, min_rows: int, check_interval: float = CHECK_INTERVAL) -> None:
        self.shelf = shelf
        self.index = index
        self.feed = feed
        self.read_feed = read_feed
        self.min_rows = min_rows
        self.check_interval = check_interval
        self.standing: Round | None = None
        self._checked = time.monotonic()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- start: map the newest round ----------------------------------------------------------

    def start(self) -> None:
        """Before the first read of the feed: stand on the newest round that can be had (a
        failure costs only the replay of the whole feed)."""
        try:
            self._start()
        except Exception:  # noqa: BLE001 - a snapshot is an optimization: never the caller's problem
            log.warning("imgcache: index snapshots of %s not used; replaying the feed", self.shelf.namespace,
                        exc_info=True)

    def _start(self) -> None:
        for candidate in self.shelf.rounds().rounds:
            mapped = self._map(candidate)
            if mapped is None:
                continue
            if not self.feed.start_at(candidate.position):
                return  # read already (another thread): the index is being fed from the start
            for scope_id, snapshot in mapped.items():
                self.index.stand_on(scope_id, snapshot)
            self.standing = candidate
            log.info("imgcache: %s stands on an index snapshot of %d entries as of %s",
                     self.shelf.namespace, sum(s.rows for s in mapped.values()), candidate.position)
            return

    def _map(self, made: Round) -> dict[str, MappedScope] | None:
        mapped: dict[str, MappedScope] = {}
        for scope_id, digest in made.scopes.items():
            directory = self.shelf.local(digest)
            if directory is None:
                return None
            try:
                mapped[scope_id] = MappedScope(directory)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("imgcache: index snapshot %s is unreadable (%s); not used", digest[:12], exc)
                shutil.rmtree(directory, ignore_errors=True)
                self.shelf.report_bad(digest)
                return None
        return mapped

    # -- later: write or adopt, off the caller's path ---------------------------------------------

    def tick(self) -> None:
        """Called after each sync: at most every ``check_interval``, look at the rounds in a
        background thread."""
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return
            self._checked = now
            self._worker = threading.Thread(target=self.check, name="imgcache-snapshots", daemon=True)
            self._worker.start()

    def check(self) -> None:
        """Write a round if one is due and this process holds the lease, else stand on a newer
        round if this process holds many rows of its own."""
        try:
            scopes = self.index.scopes()
            own = sum(scope.own_rows for _, scope in scopes)
            shelved = self.shelf.rounds()
            rounds = shelved.rounds
            newer = rounds[0] if rounds and rounds[0] != self.standing else None
            if own >= self.min_rows or (shelved.due and scopes):
                with self.shelf.lease(LEASE_SECONDS) as held:
                    if held:
                        self.write(shelved)
                        return
            if newer is not None and (own >= self.min_rows or self.standing is None):
                self.adopt(newer)
        except Exception:  # noqa: BLE001 - a snapshot is an optimization: never the caller's problem
            log.warning("imgcache: index snapshot round failed; the feed still serves", exc_info=True)

    def settle(self, timeout: float | None = None) -> None:
        """Wait for a check running in the background (for tests and benchmarks)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def adopt(self, made: Round) -> None:
        mapped = self._map(made)
        if mapped is None:
            return
        for scope_id, snapshot in mapped.items():
            self.index.stand_on(scope_id, snapshot)
        self.standing = made

    def write(self, shelved: Shelved) -> Round | None:
        """Write a round of every scope as of the feed position read so far, publish it, stand
        on it and trim the feed below the round before."""
        self.read_feed()  # all that the feed holds so far is in the index: the round covers it
        read = self.feed.position()
        if read is None or read[1] is None:
            return None
        tier, position = read
        if tier is not self.shelf.store.feed_tier():
            return None  # the feed moved tiers (Redis down): positions are not comparable
        scopes: dict[str, str] = {}
        mapped: dict[str, MappedScope] = {}
        for scope_id, scope in self.index.scopes():
            if _STOPPING.is_set():
                return None
            if scope.snapshot is not None and not scope.changed:
                scopes[scope_id] = scope.snapshot.directory.name  # named by its digest
                if shelved.stale or scopes[scope_id] in shelved.bad:
                    self.shelf.reshare(scopes[scope_id])
                continue
            directory = self.shelf.new_directory()
            try:
                self._write_scope(scope, directory)
                digest = self.shelf.keep(directory)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            scopes[scope_id] = digest
            mapped[scope_id] = MappedScope(self.shelf.root / digest)
        made = Round(position, scopes, round(time.time(), 3))
        self.shelf.publish(made)
        for scope_id, snapshot in mapped.items():
            self.index.stand_on(scope_id, snapshot)
        self.standing = made
        published = shelved.published
        kept = set(scopes.values()) | (set(published[0].scopes.values()) if published else set())
        if published:  # the round before this one is the oldest whose tail the feed keeps
            self.shelf.store.trim_records(tier, self.shelf.namespace, self.shelf.feed, published[0].position)  # type: ignore[arg-type]
        if len(published) > 1:
            self.shelf.drop(set(published[1].scopes.values()), kept)
        self.shelf.forget_others(kept)
        log.info("imgcache: wrote an index snapshot round of %s (%d scopes) as of %s",
                 self.shelf.namespace, len(scopes), position)
        return made

    @staticmethod
    def _write_scope(scope: ScopeIndex, directory: Path) -> None:
        """The scope's snapshot rows (less those removed since) and its own, in a new graph."""
        from usearch.index import Index

        rows, vectors = scope.snapshot_rows()
        base = rows.base
        graph = Index.restore(str(base.directory / "graph.usearch")) if base is not None else new_graph(scope.dim)
        if base is not None and rows.live_base is not None:
            gone = np.flatnonzero((rows.live_base == 0) & (np.asarray(base.live) != 0))
            if len(gone):
                graph.remove(gone)
        first = base.rows if base is not None else 0
        if len(vectors):
            graph.add(np.arange(first, first + len(vectors)), vectors, threads=os.cpu_count() or 1)
        write(Path(directory), scope.dim, replace(rows, graph=graph))
