"""A cold worker joins a fleet's perceptual index (issue 17): how soon a new process answers
vision searches of a namespace that other workers filled, how fast, and what memory it holds.

    python benchmarks/bench_cold_vision.py [--quick] [--json] [--entries N]

The namespace's perceptual feed (in a Redis of the benchmark's own, on loopback) is filled
with N index records (default 1,000,000; ``--quick`` 100,000) in one scope (the same question
about N pictures), plus 2,000 small scopes of 5 (other questions), through the perceptual
matcher's own feed. Seeded random 64-bit phashes stand in for fingerprinted pictures, so the
figures are the index's and the feed's, not the image decoder's. The filler then writes one
snapshot round of it all, as the lease holder's periodic check would.

Three fresh processes, side by side in the same run, each twice (alternating; the second run
is reported): this tree on the filler's host (it maps the round from the host's directory);
this tree on a "new host" (an empty snapshot directory: it fetches the round's parts from
Redis first); and the ``imgcache`` of commit :data:`BASELINE` (``git archive``), the design
before perceptual snapshots, which replays the whole feed into per-scope
:class:`~imgcache.match.perceptual.hamming.HammingIndex` es. Each is timed from its start
(before ``import imgcache``) to its first answered search; then 2,000 searches at the
default radius (10) for a stored phash with 0-6 bits flipped: p50, p99 and how many found
the stored entry (all must). Private memory and the snapshot's resident pages are read from
``/proc/self/smaps`` as in ``bench_cold_worker.py``. The vision search is the index's; a
lookup then reads each candidate's stored fingerprints from the tiers and verifies them,
which costs the same in either design.

Exit status is 0 whatever the figures unless the benchmark could not run.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cold_worker import _memory_mib, _mib, alternate, baseline_or_none, snapshots_on_host

BASELINE = "abb8a57"  # the perceptual index before its snapshots
SMALL_SCOPES = 2000
SMALL_ROWS = 5
SEARCHES = 2000
RADIUS = 10
BATCH = 20_000


def hashes(entries: int) -> Any:
    import numpy as np

    return np.random.default_rng(17).integers(0, 2**64, size=entries, dtype=np.uint64)


def key(i: int) -> str:
    """Entry ``i``'s key (a sha256, as a request's key is)."""
    return hashlib.sha256(str(i).encode()).hexdigest()


def big_scope() -> str:
    return "b" * 32


def options(snapshot_dir: str, entries: int, **more: Any) -> Any:
    """Vision options: this host's snapshot directory (and ``more``) where the imgcache running
    knows of snapshots (the baseline does not); a feed long enough for the baseline."""
    from dataclasses import fields

    from imgcache.match.config import VisionOptions

    known = {f.name for f in fields(VisionOptions)}
    extra = {"snapshot_dir": snapshot_dir, **more} if "snapshot_dir" in known else {}
    return VisionOptions(max_entries=entries + SMALL_SCOPES * SMALL_ROWS + 10, **extra)


def fill(redis_url: str, entries: int, snapshot_dir: str, out: TextIO) -> tuple[float, float]:
    """Fill the feed; then write one round. Returns the fill's and the round's seconds."""
    from imgcache import Cache

    values = hashes(entries)
    started = time.perf_counter()
    with Cache("cold", redis_url=redis_url, semantic=False,
               vision=options(snapshot_dir, entries, snapshot_rows=0)) as cache:
        matcher = cache._lookup.perceptual  # white-box: the records a stored vision entry puts out
        scope = big_scope()
        for start in range(0, entries, BATCH):
            matcher.feed.append([json.dumps({"s": scope, "k": key(i), "h": f"{int(values[i]):016x}"},
                                            separators=(",", ":")).encode()
                                 for i in range(start, min(entries, start + BATCH))])
        small = [json.dumps({"s": f"{s:032x}", "k": key(entries + s * SMALL_ROWS + r), "h": f"{s * 7919 + r:016x}"},
                            separators=(",", ":")).encode() for s in range(SMALL_SCOPES) for r in range(SMALL_ROWS)]
        matcher.feed.append(small)
        filled = time.perf_counter() - started
        print(f"  filled {entries:,} + {len(small):,} records in {filled:.0f} s", file=out)
        started = time.perf_counter()
        matcher.rounds.read_feed()
        read = time.perf_counter() - started
        matcher.rounds.check()
        written = time.perf_counter() - started - read
        print(f"  the filler read the feed in {read:.1f} s and wrote a round in {written:.1f} s, as of "
              f"{matcher.rounds.standing.position if matcher.rounds.standing else None}", file=out)
    return filled, written


def worker(redis_url: str, entries: int, spawned: float, snapshot_dir: str, seed: int) -> dict[str, Any]:
    """A fresh process's figures (run by ``--worker``)."""
    import numpy as np

    from imgcache import Cache

    values = hashes(entries)
    rng = np.random.default_rng(seed)
    with Cache("cold", redis_url=redis_url, semantic=False, vision=options(snapshot_dir, entries)) as cache:
        matcher = cache._lookup.perceptual
        matcher.sync(force=True)

        def search(phash: int) -> list[tuple[str, int]]:
            if hasattr(matcher, "index"):
                return matcher.index.search(big_scope(), phash, RADIUS)
            return matcher._indexes[big_scope()].search(phash, RADIUS)  # the baseline's

        rows = rng.integers(0, entries, size=SEARCHES + 1)
        queries = [int(values[row]) ^ sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, 7)), replace=False))
                   for row in rows.tolist()]
        search(queries[0])
        first = time.time() - spawned
        timings, found = [], 0
        for row, query in zip(rows[1:].tolist(), queries[1:]):
            started = time.perf_counter()
            answer = search(query)
            timings.append(time.perf_counter() - started)
            found += key(row) in {k for k, _ in answer}
        snapshot = getattr(getattr(matcher, "index", None), "snapshot", None)
        return {"first_search_s": first, "p50_ms": statistics.median(timings) * 1000,
                "p99_ms": float(np.percentile(timings, 99)) * 1000, "found": found,
                "on_snapshot": snapshot is not None, **_memory_mib(snapshot_dir)}


def run_worker(redis_url: str, entries: int, pythonpath: str | None, snapshot_dir: str, seed: int) -> dict[str, Any]:
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    spawned = time.time()
    done = subprocess.run([sys.executable, __file__, "--worker", redis_url, str(entries), str(spawned), snapshot_dir,
                           str(seed)], capture_output=True, text=True, check=False, env=env, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        url, entries, spawned, snapshot_dir, seed = argv[1], int(argv[2]), float(argv[3]), argv[4], int(argv[5])
        print(json.dumps(worker(url, entries, spawned, snapshot_dir, seed)))
        return 0
    from _common import (
        Result,
        emit_json,
        exit_code,
        parser,
        print_facts,
        report_stream,
        run_guarded,
        table,
    )

    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=None, help="entries in the big scope (default 1,000,000; quick 100,000)")
    args = p.parse_args(argv)
    entries = args.entries or (100_000 if args.quick else 1_000_000)

    def bench(out: TextIO) -> Result:
        from imgcache.testing import RedisServer

        with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
            host = os.path.join(tmp, "host-snapshots")
            filled, written = fill(server.url, entries, host, out)
            on_disk, _ = snapshots_on_host(host)
            print(f"the snapshot: {on_disk / 2**20:.0f} MiB ({on_disk / entries:.0f} B an entry)", file=out)
            runs = alternate(lambda tree, directory, n: run_worker(server.url, entries, tree, directory, seed=n),
                             host, baseline_or_none(tmp, BASELINE, out), tmp)
        result = Result("cold_vision", f"a fresh process joins a perceptual index of {entries:,} entries (Redis feed)",
                        "imgcache (this tree)", f"imgcache at {BASELINE}",
                        extra={"entries": entries, "fill_s": round(filled, 1), "round_s": round(written, 1),
                               "snapshot_bytes": on_disk, **{k.replace(" ", "_"): v for k, v in runs.items()}})
        rows = [[side, f"{x['first_search_s']:.2f}", f"{x['p50_ms']:.3f}", f"{x['p99_ms']:.3f}",
                 f"{x['found']:,}/{SEARCHES:,}", _mib(x["private_mib"]), _mib(x["mapped_mib"]),
                 "yes" if x["on_snapshot"] else "no"] for side, x in runs.items()]
        print(table(["", "first search s", "p50 ms", "p99 ms", "found", "private MiB", "mapped MiB", "snapshot"],
                    rows, "lrrrrrrl"), file=out)
        return result

    with report_stream(args.json) as (out, data):
        print_facts([("mode", "quick" if args.quick else "full"), ("entries", f"{entries:,}"),
                     ("phashes", "seeded random 64-bit values (a stand-in for fingerprinted pictures)")], out)
        result = run_guarded("cold_vision", lambda: bench(out), out)
        if args.json:
            emit_json([result], data)
    return exit_code([result], args.strict)


if __name__ == "__main__":
    sys.exit(main())
