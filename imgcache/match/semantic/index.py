"""In-process vector index, one per semantic scope.

Vectors live in a float16 matrix that grows by half. A scope is searched exactly (usearch's
SIMD kernels: no build step, so a restarted process serves as soon as its vectors are
loaded; and no BLAS thread pool left spinning against the embedding model's threads). Past
:data:`GRAPH_MIN_ROWS` rows a background thread also files the rows into a usearch HNSW
graph with int8 vectors (it only proposes: the verifier decides), a batch at a time; a search then asks the graph for the rows it holds and scans
only the newer rows exactly. Graph and matrix are touched under one lock (usearch indexes
are not safe for concurrent writes and reads), held for at most one batch.

A removed entry's row is zeroed and masked out: it is never proposed again.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

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

    Rows are numbered in the order entries arrive. Rows ``[0, graphed)`` live in the HNSW
    graph (with their vectors); the matrix holds only the newer rows ``[base, ...)``, which
    are searched exactly; once the graph has caught up, the matrix drops the rows it holds.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((16, dim), dtype=np.float16)
        self._base = 0  # row number of self._vectors[0]
        self._live = np.zeros(16, dtype=bool)
        self._keys: list[str] = []
        self._prompts: list[str] = []
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()
        self._graph: Any = None
        self._graphed = 0
        self._builder: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, key: str, prompt: str, vector: np.ndarray) -> None:
        self.add_many([(key, prompt, vector)])

    def add_many(self, items: list[tuple[str, str, np.ndarray]]) -> None:
        """Add entries (key, normalized prompt, unit vector) under one hold of the lock."""
        with self._lock:
            for key, prompt, vector in items:
                if key in self._rows:  # a key's prompt and scope fix its vector: nothing to update
                    continue
                row = len(self._keys)
                self._reserve(row)
                self._vectors[row - self._base] = vector
                self._live[row] = True
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

    def remove(self, key: str) -> None:
        with self._lock:
            row = self._rows.pop(key, None)
            if row is not None:
                self._live[row] = False
                if row >= self._base:
                    self._vectors[row - self._base] = 0

    def search(self, vector: np.ndarray, count: int, min_similarity: float) -> list[Candidate]:
        """The ``count`` most similar live entries at or above ``min_similarity``, best first."""
        from usearch.index import MetricKind
        from usearch.index import search as exact_search

        query = vector.astype(np.float16)
        found: dict[int, float] = {}
        with self._lock:
            used = len(self._keys)
            if not self._rows:
                return []
            if self._graphed:
                matches = self._graph.search(query, min(count * 2, self._graphed))
                found.update(zip(matches.keys.tolist(), matches.distances.tolist()))
            first = max(self._graphed, self._base)
            if used > first:
                tail = exact_search(self._vectors[first - self._base:used - self._base], query,
                                    min(count, used - first), MetricKind.Cos, exact=True, threads=2)
                found.update((first + row, distance)
                             for row, distance in zip(tail.keys.tolist(), tail.distances.tolist()))
            ranked = sorted((1.0 - distance, row) for row, distance in found.items()
                            if self._live[row] and 1.0 - distance >= min_similarity)
            return [Candidate(self._keys[row], self._prompts[row], similarity)
                    for similarity, row in reversed(ranked[-count:])]

    def _build(self) -> None:
        """File rows into the HNSW graph, one batch per hold of the lock, until it has them
        all; then drop the rows it holds from the matrix."""
        from usearch.index import Index

        while not _STOPPING.is_set():
            with self._lock:
                if self._graph is None:
                    self._graph = Index(ndim=self.dim, metric="cos", dtype="i8",
                                        connectivity=8, expansion_add=64, expansion_search=64)
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

    @property
    def nbytes(self) -> int:
        """Memory held beyond the Python strings: the matrix, the mask and the graph."""
        graph = self._graph.memory_usage if self._graph is not None else 0
        return self._vectors.nbytes + self._live.nbytes + graph


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

    def __len__(self) -> int:
        return sum(len(s) for s in self._scopes.values())
