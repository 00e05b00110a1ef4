"""HammingIndex against a brute-force reference: tables, tail scan, fallback scan, removal."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from imgcache.match.perceptual import hamming
from imgcache.match.perceptual.hamming import HammingIndex, as_hash, expected_candidates, substring_radii

N = 60_000


def flip(value: int, bits: int, rng: np.random.Generator) -> int:
    """``value`` with ``bits`` distinct random bits flipped."""
    for bit in rng.choice(64, size=bits, replace=False).tolist():
        value ^= 1 << bit
    return value


def brute(stored: dict[str, int], query: int, radius: int) -> list[tuple[str, int]]:
    found = [(key, (value ^ query).bit_count()) for key, value in stored.items()]
    return sorted((k, d) for k, d in found if d <= radius)


def same(got: list[tuple[str, int]], expected: list[tuple[str, int]]) -> None:
    distances = [d for _, d in got]
    assert distances == sorted(distances), "not sorted by distance"
    assert sorted(got) == expected


@pytest.fixture(scope="module")
def planted() -> tuple[HammingIndex, dict[str, int], list[int]]:
    """Random hashes plus, around each query, planted entries at distances 0..13."""
    rng = np.random.default_rng(4)
    stored = {f"r{i}": v for i, v in enumerate(rng.integers(0, 2**64, N, dtype=np.uint64).tolist())}
    queries = rng.integers(0, 2**64, 12, dtype=np.uint64).tolist()
    for q_index, query in enumerate(queries):
        for distance in range(14):
            for copy in range(2):
                stored[f"q{q_index}-d{distance}-{copy}"] = flip(query, distance, rng)
    index = HammingIndex()
    index.add_many(stored.items())
    index.wait_for_tables()
    return index, stored, queries


def test_substring_radii_cover_the_radius() -> None:
    for radius in range(64):
        radii = substring_radii(radius)
        # The smallest total distance at which every substring misses must exceed the radius.
        assert sum(r + 1 for r in radii) == radius + 1


@pytest.mark.parametrize("radius", [0, 1, 3, 4, 6, 8, 10, 12, 13])
def test_tables_match_brute_force(planted: tuple[HammingIndex, dict[str, int], list[int]],
                                  radius: int) -> None:
    index, stored, queries = planted
    assert index._tables is not None and index._tables.rows == len(stored)
    for query in queries:
        got = index.search(query, radius)
        same(got, brute(stored, query, radius))
        planted_here = [k for k, _ in got if k.startswith(f"q{queries.index(query)}-")]
        assert len(planted_here) == 2 * (radius + 1)  # 0..radius hit, radius+1 does not


def test_random_queries_hit_only_themselves(
        planted: tuple[HammingIndex, dict[str, int], list[int]]) -> None:
    index, stored, _ = planted
    for key in ("r0", "r1", "r59999"):
        assert index.search(stored[key], 4) == [(key, 0)]


def test_large_radius_falls_back_to_scan(
        planted: tuple[HammingIndex, dict[str, int], list[int]]) -> None:
    index, stored, queries = planted
    assert expected_candidates(20, N) * hamming.MAX_CANDIDATE_SHARE > N
    for radius in (16, 20):
        same(index.search(queries[0], radius), brute(stored, queries[0], radius))
    assert len(index.search(queries[0], 64)) == len(stored)


def test_tail_and_tables_together() -> None:
    """Rows newer than the tables are found by the tail scan."""
    rng = np.random.default_rng(5)
    index = HammingIndex()
    stored = {f"a{i}": v for i, v in enumerate(rng.integers(0, 2**64, 30_000, dtype=np.uint64).tolist())}
    index.add_many(stored.items())
    index.wait_for_tables()
    query = int(rng.integers(0, 2**64, dtype=np.uint64))
    extra = {f"t{d}": flip(query, d, rng) for d in range(12)}
    extra["t-far"] = flip(query, 30, rng)
    index.add_many(extra.items())
    stored.update(extra)
    assert index._tables is not None and index._tables.rows == 30_000
    for radius in (0, 5, 9, 11):
        same(index.search(query, radius), brute(stored, query, radius))


def test_small_index_and_empty() -> None:
    index = HammingIndex()
    assert index.search(123, 10) == []
    assert len(index) == 0
    index.add("a", 0b1011)
    index.add("b", np.uint64(0b1000))
    assert index.search(0b1011, 0) == [("a", 0)]
    assert index.search(0b1011, 2) == [("a", 0), ("b", 2)]
    assert len(index) == 2


def test_duplicate_hashes_and_readding() -> None:
    index = HammingIndex()
    index.add_many([("x", 42), ("y", 42), ("x", 42)])  # same key, same hash: one entry
    assert len(index) == 2
    assert index.search(42, 0) == [("x", 0), ("y", 0)]
    index.add("x", 43)  # a key holds one hash: this replaces it
    assert len(index) == 2
    assert index.search(42, 0) == [("y", 0)]
    assert index.search(42, 1) == [("y", 0), ("x", 1)]


def test_remove(planted: tuple[HammingIndex, dict[str, int], list[int]]) -> None:
    _, stored, queries = planted
    local = HammingIndex()
    local.add_many(stored.items())
    local.wait_for_tables()
    keys = [f"q0-d{d}-0" for d in range(5)]
    for key in keys:
        assert local.remove(key)
    assert not local.remove(keys[0])
    assert len(local) == len(stored) - len(keys)
    remaining = {k: v for k, v in stored.items() if k not in keys}
    same(local.search(queries[0], 8), brute(remaining, queries[0], 8))
    local.add(keys[0], stored[keys[0]])  # back again
    assert (keys[0], 0) in local.search(queries[0], 0)


def test_compaction_keeps_results() -> None:
    rng = np.random.default_rng(6)
    values = rng.integers(0, 2**64, 20_000, dtype=np.uint64).tolist()
    index = HammingIndex()
    index.add_many((f"c{i}", v) for i, v in enumerate(values))
    index.wait_for_tables()
    for i in range(15_000):
        index.remove(f"c{i}")
    assert len(index._keys) < 20_000  # compacted
    assert len(index) == 5_000
    remaining = {f"c{i}": values[i] for i in range(15_000, 20_000)}
    for i in (15_000, 17_777, 19_999):
        same(index.search(values[i], 12), brute(remaining, values[i], 12))
    assert index.search(values[0], 0) == []


def test_hash_values() -> None:
    assert as_hash(2**64 - 1) == 2**64 - 1
    assert as_hash(-1) == 2**64 - 1  # SQLite's signed 64-bit integers
    assert as_hash(np.int64(-2)) == 2**64 - 2
    with pytest.raises(ValueError):
        as_hash(2**64)
    with pytest.raises(TypeError):
        as_hash(1.0)
    with pytest.raises(TypeError):
        as_hash(True)
    index = HammingIndex()
    index.add("neg", -1)
    assert index.search(2**64 - 1, 0) == [("neg", 0)]
    with pytest.raises(ValueError):
        index.search(0, -1)
    with pytest.raises(TypeError):
        index.add(5, 1)  # type: ignore[arg-type]


def test_threads_add_and_search_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hamming, "TAIL_MAX_ROWS", 2_000)  # many table rebuilds meanwhile
    index = HammingIndex()
    rng = np.random.default_rng(7)
    base = {f"b{i}": v for i, v in enumerate(rng.integers(0, 2**64, 5_000, dtype=np.uint64).tolist())}
    index.add_many(base.items())
    errors: list[BaseException] = []
    per_writer = 6_000

    def writer(w: int) -> None:
        try:
            local = np.random.default_rng(100 + w)
            values = local.integers(0, 2**64, per_writer, dtype=np.uint64).tolist()
            for start in range(0, per_writer, 200):
                index.add_many((f"w{w}-{i}", values[i]) for i in range(start, start + 200))
                assert index.search(values[start], 0)[0] == (f"w{w}-{start}", 0)
                index.remove(f"w{w}-{start + 1}")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def reader() -> None:
        try:
            for key, value in list(base.items())[:400]:
                assert (key, 0) in index.search(value, 6)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(index) == len(base) + 3 * (per_writer - per_writer // 200)
    index.wait_for_tables()
    assert index._tables is not None and index._tables.rows == len(index._keys)
