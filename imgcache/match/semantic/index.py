"""In-process vector index, one per semantic scope.

A scope may stand on a snapshot that another process wrote (see :mod:`.mapped` and
:mod:`imgcache.match.rounds`): its rows are memory-mapped, shared with the other processes of
the host, and searched through its HNSW graph. The rows this process adds itself live in a
float16 matrix that grows by half, searched exactly (usearch's SIMD kernels: no build step,
and no BLAS thread pool left spinning against the embedding model's threads). Past
:data:`GRAPH_MIN_ROWS` of them a background thread also files them into a private usearch
HNSW graph with int8 vectors (it only proposes: the verifier decides), a batch at a time; a
search then asks the graph for the rows it holds and scans only the newer rows exactly.
Graphs and matrix are touched under one lock (usearch indexes are not safe for concurrent
writes and reads), held for at most one batch.

A removed entry's row is zeroed and masked out (a snapshot's row, in a mask of this
process's): it is never proposed again.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..rounds import Removals
from .mapped import MappedScope, Rows, new_graph, write

GRAPH_MIN_ROWS = 20_000
"""Below this many rows an exact scan is fast enough (a few ms) and needs no graph."""
GRAPH_BATCH = 500
_STOPPING = threading.Event()
_BUILDERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


@atexit.register
def _stop_builders() -> None:
    """A graph build must not be inside native code when the interpreter goes away."""
    _STOPPING.set()
    for builder in list(_BUILDERS):
        builder.join(timeout=5)


@dataclass(frozen=True)
class Candidate:
    key: str
    """The exact key of the stored entry."""
    prompt: str
    """Its normalized prompt."""
    similarity: float


class ScopeIndex:
    """Vectors of one scope (namespace, operation, output-changing parameters, embedder).

    A scope may stand on a *snapshot* (:class:`~imgcache.match.semantic.mapped.MappedScope`,
    memory-mapped, shared by the processes of a host): its rows are searched through its
    graph, and the ones removed since it was written are masked here. Entries it lacks are
    this process's own rows, numbered in the order they arrive: rows ``[0, graphed)`` live in
    a private HNSW graph (with their vectors); the matrix holds only the newer rows
    ``[base, ...)``, which are searched exactly; once the graph has caught up, the matrix
    drops the rows it holds.
    """

    def __init__(self, dim: int, snapshot: MappedScope | None = None) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._stand_on(snapshot)

    def _stand_on(self, snapshot: MappedScope | None) -> None:
        """Start over on ``snapshot``, with no rows of this process's own."""
        self.snapshot = snapshot
        self._dead: np.ndarray | None = None  # snapshot rows removed since it was written
        self._snapshot_live = 0 if snapshot is None else int(np.count_nonzero(snapshot.live))
        self._removed = Removals()
        self._vectors = np.zeros((16, self.dim), dtype=np.float16)
        self._base = 0  # row number of self._vectors[0]
        self._live = np.zeros(16, dtype=bool)
        self._until = np.zeros(16, dtype=np.float64)  # when each own row's entry expires at the latest; 0: never
        self._keys: list[str] = []
        self._prompts: list[str] = []
        self._rows: dict[str, int] = {}
        self._graph: Any = None
        self._graphed = 0

    def __len__(self) -> int:
        return len(self._rows) + self._snapshot_live

    @property
    def changed(self) -> bool:
        """Whether this process holds rows or removals its snapshot lacks."""
        return bool(self._rows) or self._dead is not None

    @property
    def own_rows(self) -> int:
        """Entries this process holds itself (not in its snapshot); one that expired counts
        until the process stands on a newer snapshot."""
        return len(self._rows)

    def _snapshot_row(self, key: str) -> int | None:
        """The live snapshot row holding ``key``, if any."""
        snapshot = self.snapshot
        if snapshot is None:
            return None
        row = snapshot.live_row(key)
        if row is None or (self._dead is not None and self._dead[row]):
            return None
        return row

    def add(self, key: str, prompt: str, vector: np.ndarray, until: float = 0.0) -> None:
        self.add_many([(key, prompt, vector)], [until])

    def add_many(self, items: list[tuple[str, str, np.ndarray]], until: list[float] | None = None) -> None:
        """Add entries (key, normalized prompt, unit vector) under one hold of the lock;
        ``until``: when each entry expires at the latest (its TTL fully extended; 0: never),
        after which it is not proposed."""
        with self._lock:
            self._add_locked(items, until)

    def _add_locked(self, items: list[tuple[str, str, np.ndarray]], until: list[float] | None) -> None:
        snapshot = self.snapshot
        in_snapshot = snapshot.live_rows([key for key, _, _ in items]) if snapshot is not None else None
        for at, (key, prompt, vector) in enumerate(items):
            expires = until[at] if until else 0.0
            own = self._rows.get(key)
            if own is not None:  # a key's prompt and scope fix its vector: only its lifetime can change
                old = self._until[own]
                self._until[own] = 0.0 if not expires or not old else max(old, expires)
                continue
            found = -1 if in_snapshot is None else int(in_snapshot[at])
            if found >= 0 and (self._dead is None or not self._dead[found]):
                held = float(snapshot.until[found])  # type: ignore[union-attr]
                if not held or (expires and expires <= held):
                    continue
                self._mark_dead(found)  # stored again to live longer: this process's row replaces it
            row = len(self._keys)
            self._reserve(row)
            self._vectors[row - self._base] = vector
            self._live[row] = True
            self._until[row] = expires
            self._keys.append(key)
            self._prompts.append(prompt)
            self._rows[key] = row
        used = len(self._keys)
        if (used >= GRAPH_MIN_ROWS and used - self._graphed >= GRAPH_BATCH
                and (self._builder is None or not self._builder.is_alive())):
            self._builder = threading.Thread(target=self._build, name="imgcache-index", daemon=True)
            _BUILDERS.add(self._builder)
            self._builder.start()

    def _reserve(self, row: int) -> None:
        if row - self._base >= len(self._vectors):
            grown = max(16, len(self._vectors) + len(self._vectors) // 2)
            self._vectors = np.resize(self._vectors, (grown, self.dim))
        if row == len(self._live):
            self._live = np.resize(self._live, max(16, row + row // 2))
            self._live[row:] = False
            self._until = np.resize(self._until, len(self._live))

    def remove(self, key: str, read_at: str | None = None) -> bool:
        """Never propose ``key`` again (until it is added anew); whether it was here.
        ``read_at``: where on the feed the removal was read (None: removed here)."""
        with self._lock:
            removed = self._remove_locked(key)
            if removed or read_at is not None:  # a removal made here that removed nothing has no record
                self._removed.add("", key, read_at)
            return removed

    def _remove_locked(self, key: str) -> bool:
        row = self._rows.pop(key, None)
        if row is not None:
            self._live[row] = False
            if row >= self._base:
                self._vectors[row - self._base] = 0
            return True
        snapshot_row = self._snapshot_row(key)
        if snapshot_row is None:
            return False
        self._mark_dead(snapshot_row)
        return True

    def _mark_dead(self, snapshot_row: int) -> None:
        assert self.snapshot is not None
        if self._dead is None:
            self._dead = np.zeros(self.snapshot.rows, dtype=bool)
        self._dead[snapshot_row] = True
        self._snapshot_live -= 1

    def search(self, vector: np.ndarray, count: int, min_similarity: float) -> list[Candidate]:
        """The ``count`` most similar live entries at or above ``min_similarity``, best first."""
        from usearch.index import MetricKind
        from usearch.index import search as exact_search

        query = vector.astype(np.float16)
        found: list[tuple[float, str, str]] = []
        now = time.time()
        with self._lock:
            snapshot = self.snapshot
            if snapshot is not None and self._snapshot_live:
                matches = snapshot.graph.search(query, min(count * 2, len(snapshot.graph)),
                                                exact=snapshot.rows < GRAPH_MIN_ROWS)
                for row, distance in zip(matches.keys.tolist(), matches.distances.tolist()):
                    if (1.0 - distance >= min_similarity and snapshot.live[row]
                            and (self._dead is None or not self._dead[row])
                            and not 0 < snapshot.until[row] <= now):
                        found.append((1.0 - distance, snapshot.key(row), snapshot.prompt(row)))
            own: dict[int, float] = {}
            used = len(self._keys)
            if self._graphed:
                matches = self._graph.search(query, min(count * 2, self._graphed))
                own.update(zip(matches.keys.tolist(), matches.distances.tolist()))
            first = max(self._graphed, self._base)
            if used > first:
                tail = exact_search(self._vectors[first - self._base:used - self._base], query,
                                    min(count, used - first), MetricKind.Cos, exact=True, threads=2)
                own.update((first + row, distance)
                           for row, distance in zip(tail.keys.tolist(), tail.distances.tolist()))
            found += [(1.0 - distance, self._keys[row], self._prompts[row]) for row, distance in own.items()
                      if self._live[row] and 1.0 - distance >= min_similarity and not 0 < self._until[row] <= now]
        found.sort(key=lambda item: item[0], reverse=True)
        return [Candidate(key, prompt, similarity) for similarity, key, prompt in found[:count]]

    def _build(self) -> None:
        """File rows into the HNSW graph, one batch per hold of the lock, until it has them
        all; then drop the rows it holds from the matrix."""
        while not _STOPPING.is_set():
            with self._lock:
                if self._graph is None:
                    self._graph = new_graph(self.dim)
                end = min(len(self._keys), self._graphed + GRAPH_BATCH)
                if end <= self._graphed:  # caught up: keep only the rows the graph lacks
                    used = len(self._keys)
                    self._vectors = self._vectors[self._graphed - self._base:used - self._base].copy()
                    self._base = self._graphed
                    return
                self._graph.add(np.arange(self._graphed, end),
                                self._vectors[self._graphed - self._base:end - self._base], threads=2)
                self._graphed = end
            time.sleep(0.001)  # let searches and adds in between batches

    def wait_for_graph(self, timeout: float | None = None) -> None:
        """Block until the background graph build (if any) has finished: for tests and benchmarks."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)

    # -- snapshots ------------------------------------------------------------------------

    def _own_vectors(self, rows: list[int]) -> np.ndarray:
        """Vectors of this process's rows (ascending): from the matrix, or as the private
        graph holds them."""
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        ids = np.asarray(rows, dtype=np.int64)
        in_graph = ids < self._base
        if in_graph.any():
            out[in_graph] = np.asarray(self._graph.get(ids[in_graph], dtype=np.float32)).reshape(-1, self.dim)
        out[~in_graph] = self._vectors[ids[~in_graph] - self._base]
        return out

    def snapshot_rows(self) -> tuple[Rows, np.ndarray]:
        """What a new snapshot of this scope is made of (see :func:`mapped.write`): the current
        snapshot's rows with their live mask, and this process's live rows with their vectors,
        copied :data:`GRAPH_BATCH` x 16 rows per hold of the lock (a row removed meanwhile is
        in :attr:`_removed`, which :meth:`adopt` applies again)."""
        now = time.time()
        with self._lock:
            snapshot = self.snapshot
            live_base = None
            if snapshot is not None:  # removed or expired since it was written: dead in the next
                live_base = np.asarray(snapshot.live).astype(np.uint8)
                if self._dead is not None:
                    live_base[self._dead] = 0
                until = np.asarray(snapshot.until)
                live_base[(until > 0) & (until <= now)] = 0
            rows = sorted(r for r in self._rows.values() if not 0 < self._until[r] <= now)
            keys, prompts = [self._keys[r] for r in rows], [self._prompts[r] for r in rows]
            until_own = self._until[rows].tolist()
        vectors = np.zeros((len(rows), self.dim), dtype=np.float32)
        step = GRAPH_BATCH * 16
        for start in range(0, len(rows), step):
            with self._lock:  # rows are never rewritten; only where they live (matrix or graph) moves
                if self.snapshot is not snapshot:
                    raise RuntimeError("the scope stood on another snapshot while a round was written")
                vectors[start:start + step] = self._own_vectors(rows[start:start + step])
        return Rows(snapshot, live_base, keys, prompts, until_own, graph=None), vectors

    def adopt(self, snapshot: MappedScope, position: str) -> None:
        """Stand on a newer snapshot, written as of feed ``position``, under one hold of the
        lock: what this process removed stays removed (a key removed and stored again
        included: the snapshot may hold its old entry), and its own rows the snapshot lacks
        (or holds to expire sooner) are kept, unless expired; the rest are dropped."""
        now = time.time()
        with self._lock:
            removed = self._removed.after(position)
            keys = list(self._rows)
            found = snapshot.live_rows(keys).tolist()
            held = np.asarray(snapshot.until)

            def keep(key: str, at: int) -> bool:
                until = self._until[self._rows[key]]
                if 0 < until <= now:
                    return False
                return at < 0 or ("", key) in removed or bool(held[at] and (not until or until > held[at]))

            kept = sorted(self._rows[key] for key, at in zip(keys, found) if keep(key, at))
            items = list(zip([self._keys[r] for r in kept], [self._prompts[r] for r in kept],
                             self._own_vectors(kept)))
            until = self._until[kept].tolist()
            dead = snapshot.live_rows(removed.by_scope().get("", []))
            self._stand_on(snapshot)
            self._removed = removed
            for row in dead[dead >= 0].tolist():
                self._mark_dead(row)
            self._add_locked(items, until)

    @property
    def nbytes(self) -> int:
        """Private memory held beyond the Python strings: the matrix, the masks and the graph
        (a snapshot's mapped pages are the page cache's, shared between processes)."""
        graph = self._graph.memory_usage if self._graph is not None else 0
        dead = self._dead.nbytes if self._dead is not None else 0
        return self._vectors.nbytes + self._live.nbytes + graph + dead


class SemanticIndex:
    """Scopes by id, created on first use."""

    def __init__(self) -> None:
        self._scopes: dict[str, ScopeIndex] = {}
        self._lock = threading.Lock()

    def scope(self, scope_id: str, dim: int, *, authoritative: bool = False) -> ScopeIndex | None:
        """The scope's index, created with ``dim`` if new. A scope's vectors all have one length:
        for a vector of another length this returns None, unless ``authoritative`` (the local
        embedder's own vector), which replaces a scope that malformed records created."""
        with self._lock:
            index = self._scopes.get(scope_id)
            if index is None or (index.dim != dim and authoritative):
                index = self._scopes[scope_id] = ScopeIndex(dim)
            return index if index.dim == dim else None

    def get(self, scope_id: str) -> ScopeIndex | None:
        return self._scopes.get(scope_id)

    def clear(self) -> None:
        with self._lock:
            self._scopes.clear()

    def scopes(self) -> list[tuple[str, ScopeIndex]]:
        with self._lock:
            return list(self._scopes.items())

    def removals_lost_after(self, position: str) -> bool:
        return any(scope._removed.lost_after(position) for _, scope in self.scopes())

    def stand_on(self, scope_id: str, snapshot: MappedScope, position: str) -> None:
        """Serve the scope from ``snapshot`` (see :meth:`ScopeIndex.adopt`)."""
        with self._lock:
            index = self._scopes.get(scope_id)
            if index is None or index.dim != snapshot.dim:
                self._scopes[scope_id] = ScopeIndex(snapshot.dim, snapshot)
                return
        index.adopt(snapshot, position)

    def __len__(self) -> int:
        return sum(len(s) for s in self._scopes.values())

    # -- snapshots (see :mod:`imgcache.match.rounds`) -------------------------------------------

    @staticmethod
    def open_snapshot(directory: Path) -> MappedScope:
        return MappedScope(directory)

    @staticmethod
    def write_snapshot(scope: ScopeIndex, directory: Path) -> None:
        """The scope's snapshot rows (less those removed since) and its own, in a new graph
        built with all cores."""
        from usearch.index import Index

        rows, vectors = scope.snapshot_rows()
        base = rows.base
        # a copy of the mapped graph through the mapping itself: its file may be gone (a newer round)
        graph = Index.restore(base.graph.save()) if base is not None else new_graph(scope.dim)
        if base is not None and rows.live_base is not None:
            gone = np.flatnonzero((rows.live_base == 0) & (np.asarray(base.live) != 0))
            if len(gone):
                graph.remove(gone)
        first = base.rows if base is not None else 0
        if len(vectors):
            graph.add(np.arange(first, first + len(vectors)), vectors, threads=os.cpu_count() or 1)
        write(directory, scope.dim, replace(rows, graph=graph))
