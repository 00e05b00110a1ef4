"""Near-duplicate search over a million 64-bit perceptual hashes: HammingIndex vs a numpy scan.

    python benchmarks/bench_hamming.py [--quick] [--json] [--strict]

1,000,000 random 64-bit hashes plus, around each of 200 query hashes, planted near-duplicates
at distances 0..12. For radius 6, 8 and 10, each query is timed through
``HammingIndex.search`` (the candidate) and through a plain numpy popcount scan of the same
array (the baseline), side by side in alternating rounds; both must return the same rows.
Half the queries have planted neighbours, half are fresh random hashes (the common miss).
Build time (``add_many`` of a million keys, then the tables) and memory per entry are
reported too. Target (issue 4): p50 <= 2 ms per query.

Exit status is 0 whatever the figures unless a benchmark could not run; with ``--strict`` a
missed target also exits 1.
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    Result,
    compare,
    emit_json,
    exit_code,
    parser,
    print_facts,
    report,
    report_stream,
    run_guarded,
    summary,
)

from imgcache.match.perceptual.hamming import HammingIndex, popcount

ROWS = 1_000_000
QUERIES = 200
PLANTED_MAX_DISTANCE = 12
RADII = (6, 8, 10)
TARGET_P50_US = 2000.0
# (rounds, per_round, warmup) for (quick, default)
LOOPS = ((4, 25, 5), (10, 100, 20))


def flip(value: int, bits: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, size=bits, replace=False).tolist():
        value ^= 1 << bit
    return value


def dataset(seed: int = 4) -> tuple[np.ndarray, list[int]]:
    """``(hashes, queries)``: random hashes then the planted ones, and the query hashes."""
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, 2**64, QUERIES, dtype=np.uint64).tolist()
    planted = [flip(query, distance, rng)
               for query in queries[:QUERIES // 2]
               for distance in range(PLANTED_MAX_DISTANCE + 1)]
    randoms = rng.integers(0, 2**64, ROWS, dtype=np.uint64)
    return np.concatenate([randoms, np.array(planted, dtype=np.uint64)]), queries


def scan(hashes: np.ndarray, query: int, radius: int) -> np.ndarray:
    """The baseline: a plain vectorized popcount scan, rows within ``radius``."""
    return np.flatnonzero(popcount(hashes ^ np.uint64(query)) <= radius)


def build(hashes: np.ndarray) -> tuple[HammingIndex, dict[str, Any]]:
    keys = [f"img-{row:08d}" for row in range(len(hashes))]
    values = hashes.tolist()
    gc.collect()
    started = time.perf_counter()
    index = HammingIndex()
    index.add_many(zip(keys, values))
    added = time.perf_counter() - started
    index.wait_for_tables()
    total = time.perf_counter() - started
    rows = len(hashes)
    slots = sys.getsizeof(index._rows) + sys.getsizeof(index._keys)  # key -> row, row -> key
    facts = {
        "rows": rows,
        "build_add_many_s": round(added, 3),
        "build_total_s": round(total, 3),
        "bytes_per_entry_arrays": round(index.nbytes / rows, 1),
        "bytes_per_entry_with_key_slots": round((index.nbytes + slots) / rows, 1),
    }
    return index, facts


def bench_radius(index: HammingIndex, hashes: np.ndarray, queries: list[int], radius: int,
                 quick: bool, facts: dict[str, Any]) -> Result:
    result = Result(f"hamming_search_r{radius}",
                    f"near-duplicates within {radius} bits among {len(hashes):,} 64-bit hashes",
                    "HammingIndex.search (multi-index hashing)",
                    "numpy popcount scan of the array",
                    target=f"p50 <= {TARGET_P50_US / 1000:g} ms")
    for query in queries[:20] + queries[-5:]:  # same answers, or the figures mean nothing
        got = sorted(int(key[4:]) for key, _ in index.search(query, radius))
        expected = scan(hashes, query, radius).tolist()
        if got != expected:
            raise RuntimeError(f"radius {radius}: index found {len(got)} rows, scan {len(expected)}")
    cycle_a = itertools.cycle(queries)
    cycle_b = itertools.cycle(queries)
    rounds, per_round, warmup = LOOPS[0 if quick else 1]
    result.candidate, result.baseline = compare(
        lambda: index.search(next(cycle_a), radius),
        lambda: scan(hashes, next(cycle_b), radius),
        rounds=rounds, per_round=per_round, warmup=warmup)
    result.passed = result.candidate.p50 <= TARGET_P50_US
    found = sum(len(index.search(q, radius)) for q in queries[:QUERIES // 2])
    result.notes.append(f"{found / (QUERIES // 2):.1f} matches per planted query "
                        f"(planted at 0..{PLANTED_MAX_DISTANCE}); random queries: none expected")
    result.extra.update(facts)
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    results: list[Result] = []
    with report_stream(args.json) as (out, data):
        hashes, queries = dataset()
        index, facts = build(hashes)
        print_facts([
            ("numpy", np.__version__),
            ("rows", (f"{facts['rows']:,} (random, plus {QUERIES // 2} x {PLANTED_MAX_DISTANCE + 1} "
                     "planted)")),
            ("build", (f"add_many {facts['build_add_many_s']:.2f} s, with tables "
                      f"{facts['build_total_s']:.2f} s")),
            ("memory", (f"{facts['bytes_per_entry_arrays']} B/entry in arrays, "
                       f"{facts['bytes_per_entry_with_key_slots']} B/entry with the key dict "
                       "and list slots (key strings not counted)")),
        ], out)
        for radius in RADII:
            result = run_guarded(
                f"hamming_search_r{radius}",
                lambda: bench_radius(index, hashes, queries, radius, args.quick, facts),
                out, f"radius {radius}")
            results.append(result)
            report(result, out)
        summary(results, out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


if __name__ == "__main__":
    sys.exit(main())
