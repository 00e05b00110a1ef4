"""The per-scope vector index: exact scan, background HNSW graph, removal."""

from __future__ import annotations

import numpy as np
import pytest

from imgcache.match.semantic import index as index_module
from imgcache.match.semantic.index import ScopeIndex, SemanticIndex


def unit_rows(count: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def key(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture
def small_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "GRAPH_MIN_ROWS", 100)
    monkeypatch.setattr(index_module, "GRAPH_BATCH", 25)


def test_exact_search_finds_the_nearest_and_honours_the_floor() -> None:
    vectors = unit_rows(300)
    scope = ScopeIndex(32)
    scope.add_many([(key(i), f"p{i}", v) for i, v in enumerate(vectors)])
    best = scope.search(vectors[7], 3, -1.0)
    assert best[0].key == key(7) and best[0].similarity == pytest.approx(1.0, abs=1e-3)
    assert [c.similarity for c in best] == sorted((c.similarity for c in best), reverse=True)
    assert all(c.similarity >= 0.99 for c in scope.search(vectors[7], 3, 0.99))


@pytest.mark.usefixtures("small_graph")
def test_graph_and_tail_together_find_every_entry() -> None:
    vectors = unit_rows(400)
    scope = ScopeIndex(32)
    scope.add_many([(key(i), f"p{i}", v) for i, v in enumerate(vectors[:300])])
    scope.wait_for_graph(timeout=30)
    for i, v in enumerate(vectors[300:], start=300):  # the newest rows: in the exact tail
        scope.add(key(i), f"p{i}", v)
    for i in (0, 150, 299, 300, 399):
        assert scope.search(vectors[i], 1, 0.9)[0].key == key(i)
    assert len(scope) == 400


@pytest.mark.usefixtures("small_graph")
def test_removed_entries_are_never_proposed() -> None:
    vectors = unit_rows(300)
    scope = ScopeIndex(32)
    scope.add_many([(key(i), f"p{i}", v) for i, v in enumerate(vectors)])
    scope.wait_for_graph(timeout=30)
    scope.remove(key(10))
    scope.remove(key(299))
    assert key(10) not in {c.key for c in scope.search(vectors[10], 8, -1.0)}
    assert key(299) not in {c.key for c in scope.search(vectors[299], 8, -1.0)}
    scope.add(key(10), "p10", vectors[10])  # back again
    assert scope.search(vectors[10], 1, 0.9)[0].key == key(10)


def test_a_scope_keeps_one_vector_length() -> None:
    index = SemanticIndex()
    assert index.scope("s", 32) is not None
    assert index.scope("s", 16) is None
    replaced = index.scope("s", 16, authoritative=True)
    assert replaced is not None and replaced.dim == 16


def test_removals_a_snapshot_covers_are_forgotten_and_expired_own_rows_dropped(tmp_path) -> None:
    """A key removed and stored again stays this process's own row only until it stands on
    a snapshot written after both (else it would make every round due); a row of its own
    that expired is not carried onto the next snapshot."""
    import hashlib
    import time

    from imgcache.match.semantic.mapped import MappedScope

    def sha_key(i: int) -> str:
        return hashlib.sha256(str(i).encode()).hexdigest()

    vectors = unit_rows(3)
    writer, reader = ScopeIndex(32), ScopeIndex(32)
    writer.add(sha_key(0), "p0", vectors[0])
    (tmp_path / "first").mkdir()
    SemanticIndex.write_snapshot(writer, tmp_path / "first")
    first = MappedScope(tmp_path / "first")
    for scope in (writer, reader):
        scope.adopt(first, "10-0")
        scope.remove(sha_key(0), read_at="11-0")
        scope.add(sha_key(0), "p0", vectors[0], time.time() + 3600)
    reader.add(sha_key(1), "p1", vectors[1], time.time() - 1)  # expired already
    (tmp_path / "second").mkdir()
    SemanticIndex.write_snapshot(writer, tmp_path / "second")
    reader.adopt(MappedScope(tmp_path / "second"), "12-0")
    assert reader.own_rows == 0 and not reader.changed
    assert [c.key for c in reader.search(vectors[0], 1, 0.9)] == [sha_key(0)]
