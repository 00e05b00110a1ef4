"""In-process vector index, one per semantic scope.

Exact search (a float32 matrix-vector product and a partial sort) is used at every size: it
needs no build step, so a restarted process serves as soon as its vectors are loaded, and on
this class of machine it searches 100,000 entries in a few milliseconds. Rows are appended
to a growing matrix; a removed entry is masked out and its row reused by the next append.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    key: str
    """The exact key of the stored entry."""
    prompt: str
    """Its normalized prompt."""
    similarity: float


class ScopeIndex:
    """Vectors of one scope (namespace, operation, output-changing parameters, embedder)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((16, dim), dtype=np.float32)
        self._live = np.zeros(16, dtype=bool)
        self._keys: list[str] = []
        self._prompts: list[str] = []
        self._rows: dict[str, int] = {}
        self._free: list[int] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, key: str, prompt: str, vector: np.ndarray) -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._free.pop() if self._free else self._append_row()
                self._rows[key] = row
            self._vectors[row] = vector
            self._keys[row] = key
            self._prompts[row] = prompt
            self._live[row] = True

    def _append_row(self) -> int:
        row = len(self._keys)
        if row == len(self._vectors):
            grown = max(16, row * 2)
            self._vectors = np.resize(self._vectors, (grown, self.dim))
            self._live = np.resize(self._live, grown)
            self._live[row:] = False
        self._keys.append("")
        self._prompts.append("")
        return row

    def remove(self, key: str) -> None:
        with self._lock:
            row = self._rows.pop(key, None)
            if row is not None:
                self._live[row] = False
                self._free.append(row)

    def search(self, vector: np.ndarray, count: int, min_similarity: float) -> list[Candidate]:
        """The ``count`` most similar live entries at or above ``min_similarity``, best first."""
        with self._lock:
            used = len(self._keys)
            if not self._rows:
                return []
            scores = self._vectors[:used] @ vector
            scores[~self._live[:used]] = -np.inf
            count = min(count, used)
            top = np.argpartition(-scores, count - 1)[:count]
            top = top[np.argsort(-scores[top])]
            return [Candidate(self._keys[i], self._prompts[i], float(scores[i]))
                    for i in top if scores[i] >= min_similarity]

    @property
    def nbytes(self) -> int:
        """Memory held beyond the Python strings: the matrix and the masks."""
        return self._vectors.nbytes + self._live.nbytes


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
