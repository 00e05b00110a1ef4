"""A cold worker joins a fleet (issue 17): how soon a new process answers near-match lookups
of a scope that other workers filled, how fast once warm, and what memory it holds.

    python benchmarks/bench_cold_worker.py [--quick] [--json] [--entries N]

One scope is filled with N entries (default 100,000; ``--quick`` 20,000) through the public
API (``@cache.cached`` on a cache with a Redis of its own on loopback), with a fast
deterministic embedder standing in for the model: a hashed bag of words, 384-d, so that the
figures are the index's and the feed's, not the model's. Then a fresh process is started
and asked paraphrases of stored prompts ("generate an image of " + the prompt: a verified semantic
hit) until the first one hits: the figure is the time from its start (before ``import
imgcache``) to that hit. It then asks 300 more; the p50 is that of the last 200 ("after
warm-up"). At the end it reads its memory from ``/proc/self/smaps``: private (``Private_Clean
+ Private_Dirty`` of every mapping but the snapshot files) and the resident pages of the
mapped snapshot files (shared by the processes of a host through the page cache).

The filler holds the snapshot lease: it writes rounds as it fills and one at the end (what
its next periodic check would). Three fresh processes, side by side in the same run: this
tree on the filler's host (it maps the round from the host's directory); this tree on a "new
host" (an empty snapshot directory: it fetches the round's parts from Redis first); and the
``imgcache`` of commit :data:`BASELINE` (extracted with ``git archive``): the design before
issue 17, which replays the whole feed. Each runs twice, alternating with the others, and
its second run is reported; each process asks about its own stored prompts, so none finds
another's aliases.

Exit status is 0 whatever the figures unless the benchmark could not run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

BASELINE = "c332912"  # the semantic index before issue 17's first change
DIM = 384
WORDS = ["red", "blue", "green", "yellow", "cat", "dog", "fox", "owl", "castle", "tree", "river", "mountain", "city", "robot", "dragon", "ship", "house", "forest", "painting", "photo", "sunset", "night", "winter", "garden", "tower", "bridge", "lantern", "violin", "teapot", "bicycle"]
ASKED = 300
WARM = 100


def embed(texts: list[str]) -> Any:
    """The stand-in embedder: a signed hashed bag of words, unit length."""
    import numpy as np

    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.split():
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            out[row, h % DIM] += 1.0 if (h >> 20) & 1 else -1.0
        norm = float(np.linalg.norm(out[row]))
        out[row] /= norm or 1.0
    return out


def prompt(i: int) -> str:
    picked = [WORDS[int.from_bytes(hashlib.sha256(f"{i}:{k}".encode()).digest()[:4], "little") % len(WORDS)]
              for k in range(6)]
    return " ".join(picked) + f" number {i}"


def options(snapshot_dir: str | None = None, **more: Any) -> Any:
    """Semantic options with the stand-in embedder; this host's snapshot directory (and
    ``more``) where the imgcache running knows of snapshots (the baseline does not)."""
    from dataclasses import fields

    from imgcache.match.config import SemanticOptions
    from imgcache.match.semantic.embed import CallableEmbedder

    known = {f.name for f in fields(SemanticOptions)}
    extra = {k: v for k, v in {"snapshot_dir": snapshot_dir, **more}.items() if k in known}
    return SemanticOptions(embedder=CallableEmbedder(embed, name="hashed-bow-384"), **extra)


def fill(redis_url: str, entries: int, snapshot_dir: str, out: TextIO) -> tuple[float, float]:
    """Fill the scope; then write one snapshot round of it all, as the lease holder's periodic
    check would (no round during the fill: a round trims the feed below the round before,
    and the baseline needs the whole feed). Returns the fill's and the round's seconds."""
    from imgcache import Cache

    started = time.perf_counter()
    with Cache("cold", redis_url=redis_url, semantic=options(snapshot_dir, snapshot_rows=0)) as cache:
        generate = cache.cached(name="gen")(lambda *, prompt: b"an image")
        for i in range(entries):
            generate(prompt=prompt(i))
            if i and i % 20_000 == 0:
                print(f"  ... filled {i:,} in {time.perf_counter() - started:.0f} s", file=out)
        filled = time.perf_counter() - started
        rounds = cache._lookup.semantic.rounds  # white-box: the lease holder's periodic check, now
        started = time.perf_counter()
        rounds.read_feed()
        rounds.check()
        written = time.perf_counter() - started
        print(f"  a snapshot round of {entries:,} entries written in {written:.1f} s, as of "
              f"{rounds.standing.position if rounds.standing else None}", file=out)
    return filled, written


def worker(redis_url: str, first: int, entries: int, spawned: float, snapshot_dir: str) -> dict[str, Any]:
    """A fresh process's figures (run by ``--worker``)."""
    from imgcache import Cache

    made: list[str] = []
    timings: list[float] = []
    first_hit = None
    with Cache("cold", redis_url=redis_url, semantic=options(snapshot_dir)) as cache:
        generate = cache.cached(name="gen")(lambda *, prompt: made.append(prompt) or b"made anew")
        for n in range(ASKED):
            asked = "generate an image of " + prompt((first + n) % entries)
            before, started = len(made), time.perf_counter()
            generate(prompt=asked)
            timings.append(time.perf_counter() - started)
            if first_hit is None and len(made) == before:
                first_hit = time.time() - spawned
        by_match = cache.stats()["by_match"]
    return {"first_hit_s": first_hit, "p50_ms": statistics.median(timings[WARM:]) * 1000,
            "first10_ms": [round(t * 1000, 1) for t in timings[:10]], "misses": len(made),
            "semantic_hits": by_match.get("semantic", 0), **_memory_mib(snapshot_dir)}


def _memory_mib(snapshot_dir: str) -> dict[str, float | None]:
    """Private memory (``Private_Clean + Private_Dirty`` of every mapping but the snapshot
    files) and the resident pages of the mapped snapshot files, which the processes of a
    host share through the page cache (alone on a host they are counted private)."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return {"private_mib": None, "mapped_mib": None}
    private = mapped = 0
    in_snapshot = False
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:  # a mapping's header line
            in_snapshot = len(head) >= 6 and head[-1].startswith(snapshot_dir)
        elif in_snapshot and head[0] == "Rss:":
            mapped += int(head[1])
        elif not in_snapshot and head[0] in ("Private_Clean:", "Private_Dirty:"):
            private += int(head[1])
    return {"private_mib": private / 1024, "mapped_mib": mapped / 1024}


def run_worker(redis_url: str, first: int, entries: int, pythonpath: str | None, snapshot_dir: str) -> dict[str, Any]:
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    spawned = time.time()
    done = subprocess.run([sys.executable, __file__, "--worker", redis_url, str(first), str(entries), str(spawned),
                           snapshot_dir],
                          capture_output=True, text=True, check=False, env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(tmp: str, commit: str = BASELINE) -> str:
    """The ``imgcache`` package of ``commit``, extracted into ``tmp``."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", commit, "imgcache"], capture_output=True,
                             check=False)
    if archive.returncode:
        raise RuntimeError(f"git archive {commit} failed: {archive.stderr.decode(errors='replace')[:200]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


def snapshots_on_host(host: str) -> tuple[int, int]:
    """The largest snapshot under a host's snapshot directory (``<namespace>/<feed>/<digest>``),
    in bytes, and how many are kept there."""
    snapshots = [d for d in Path(host).glob("*/*/*") if d.is_dir() and not d.name.startswith(".")]
    return max((sum(f.stat().st_size for f in d.iterdir()) for d in snapshots), default=0), len(snapshots)


def baseline_or_none(tmp: str, commit: str, out: TextIO) -> str | None:
    """:func:`baseline_tree`, or None (said on ``out``) in a checkout without the commit."""
    try:
        return baseline_tree(os.path.join(tmp, "baseline"), commit)
    except RuntimeError as exc:  # a shallow clone
        print(f"baseline not run: {exc}", file=out)
        return None


def alternate(run: Callable[[str | None, str, int], dict[str, Any]], host: str, old_tree: str | None,
              tmp: str) -> dict[str, dict[str, Any]]:
    """Run each side twice, alternating, and keep each one's second run (the first process
    after the fill pays for caches the others find warm): this tree on the filler's host,
    this tree on a "new host" (an empty snapshot directory: it fetches the round's parts from
    Redis before it maps them), and the baseline tree if there is one. ``run(tree,
    snapshot_dir, n)`` runs one process; ``n`` numbers the runs, so each asks its own."""
    runs: dict[str, dict[str, Any]] = {}
    sides = (("candidate", None, host), ("new host", None, ""), ("baseline", old_tree, host))
    for turn in range(2):
        for number, (side, tree, directory) in enumerate(sides):
            if side == "baseline" and tree is None:
                continue
            if side == "new host":
                directory = tempfile.mkdtemp(dir=tmp, prefix="new-host-")
            runs[side] = run(tree, directory, len(sides) * turn + number)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        url, first, entries, spawned, snapshot_dir = argv[1], int(argv[2]), int(argv[3]), float(argv[4]), argv[5]
        print(json.dumps(worker(url, first, entries, spawned, snapshot_dir)))
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
    p.add_argument("--entries", type=int, default=None, help="entries in the scope (default 100,000; quick 20,000)")
    args = p.parse_args(argv)
    entries = args.entries or (20_000 if args.quick else 100_000)

    def bench(out: TextIO) -> Result:
        from imgcache.testing import RedisServer

        with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
            host = os.path.join(tmp, "host-snapshots")
            filled, written = fill(server.url, entries, host, out)
            print(f"filled {entries:,} entries in {filled:.0f} s", file=out)
            on_disk, kept = snapshots_on_host(host)
            print(f"the newest snapshot: {on_disk / 2**20:.0f} MiB ({on_disk / entries:.0f} B an entry; "
                  f"{kept} kept on this host)", file=out)
            runs = alternate(lambda tree, directory, n: run_worker(server.url, n * ASKED, entries, tree, directory),
                             host, baseline_or_none(tmp, BASELINE, out), tmp)
            candidate, baseline = runs["candidate"], runs.get("baseline")
        result = Result("cold_worker", f"a fresh process joins a scope of {entries:,} entries (Redis feed)",
                        "imgcache (this tree)", f"imgcache at {BASELINE}",
                        extra={"entries": entries, "fill_s": round(filled, 1), "round_s": round(written, 1),
                               "snapshot_bytes": on_disk,
                               "candidate": candidate,
                               "new_host": runs["new host"], "baseline": baseline})
        rows = [[side, label, f"{x['first_hit_s']:.2f}" if x["first_hit_s"] is not None else "never",
                 f"{x['p50_ms']:.2f}", _mib(x["private_mib"]), _mib(x["mapped_mib"]),
                 " ".join(str(t) for t in x["first10_ms"][:6])]
                for side, label, x in (("candidate", result.candidate_label, candidate),
                                       ("new host", "same, empty snapshot directory", runs["new host"]),
                                       ("baseline", result.baseline_label, baseline)) if x is not None]
        print(table(["", "what", "first hit s", "p50 ms", "private MiB", "mapped MiB", "first lookups ms"], rows,
                    "llrrrrl"), file=out)
        return result

    with report_stream(args.json) as (out, data):
        print_facts([("mode", "quick" if args.quick else "full"), ("entries", f"{entries:,}"),
                     ("embedder", "hashed bag of words, 384-d (a stand-in for the model)")], out)
        result = run_guarded("cold_worker", lambda: bench(out), out)
        if args.json:
            emit_json([result], data)
    return exit_code([result], args.strict)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    sys.exit(main())
