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
warm-up"), and its private memory (``Private_Clean + Private_Dirty`` of
``/proc/self/smaps_rollup``) is read at the end.

Side by side in the same run: the same fresh process with the ``imgcache`` of commit
:data:`BASELINE` (extracted with ``git archive``): the design before issue 17. Each side runs
twice, alternating with the other, and its second run is reported; each process asks about
its own stored prompts, so none finds another's aliases.

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


def options() -> Any:
    from imgcache.match.config import SemanticOptions
    from imgcache.match.semantic.embed import CallableEmbedder

    return SemanticOptions(embedder=CallableEmbedder(embed, name="hashed-bow-384"))


def fill(redis_url: str, entries: int, out: TextIO) -> float:
    from imgcache import Cache

    started = time.perf_counter()
    with Cache("cold", redis_url=redis_url, semantic=options()) as cache:
        generate = cache.cached(name="gen")(lambda *, prompt: b"an image")
        for i in range(entries):
            generate(prompt=prompt(i))
            if i and i % 20_000 == 0:
                print(f"  ... filled {i:,} in {time.perf_counter() - started:.0f} s", file=out)
    return time.perf_counter() - started


def worker(redis_url: str, first: int, entries: int, spawned: float) -> dict[str, Any]:
    """A fresh process's figures (run by ``--worker``)."""
    from imgcache import Cache

    made: list[str] = []
    timings: list[float] = []
    first_hit = None
    with Cache("cold", redis_url=redis_url, semantic=options()) as cache:
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
            "semantic_hits": by_match.get("semantic", 0), "private_mib": _private_mib()}


def _private_mib() -> float | None:
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    kib = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(("Private_Clean", "Private_Dirty")))
    return kib / 1024


def run_worker(redis_url: str, first: int, entries: int, pythonpath: str | None) -> dict[str, Any]:
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    spawned = time.time()
    done = subprocess.run([sys.executable, __file__, "--worker", redis_url, str(first), str(entries), str(spawned)],
                          capture_output=True, text=True, check=False, env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(tmp: str) -> str:
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", BASELINE, "imgcache"], capture_output=True,
                             check=False)
    if archive.returncode:
        raise RuntimeError(f"git archive {BASELINE} failed: {archive.stderr.decode(errors='replace')[:200]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        url, first, entries, spawned = argv[1], int(argv[2]), int(argv[3]), float(argv[4])
        print(json.dumps(worker(url, first, entries, spawned)))
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
            filled = fill(server.url, entries, out)
            print(f"filled {entries:,} entries in {filled:.0f} s", file=out)
            try:
                old_tree: str | None = baseline_tree(tmp)
            except RuntimeError as exc:  # a checkout without the baseline commit (a shallow clone)
                print(f"baseline not run: {exc}", file=out)
                old_tree = None
            # Each side twice, alternating; the second run of each is reported (the first process
            # after the fill pays for caches the others find warm). Each asks its own prompts.
            runs: dict[str, dict[str, Any]] = {}
            for turn in range(2):
                for side, tree in (("candidate", None), ("baseline", old_tree)):
                    if side == "baseline" and tree is None:
                        continue
                    first = (2 * turn + (side == "baseline")) * ASKED
                    runs[side] = run_worker(server.url, first, entries, tree)
            candidate, baseline = runs["candidate"], runs.get("baseline")
        result = Result("cold_worker", f"a fresh process joins a scope of {entries:,} entries (Redis feed)",
                        "imgcache (this tree)", f"imgcache at {BASELINE}",
                        extra={"entries": entries, "fill_s": round(filled, 1), "candidate": candidate,
                               "baseline": baseline})
        rows = [[side, label, f"{x['first_hit_s']:.2f}" if x["first_hit_s"] is not None else "never",
                 f"{x['p50_ms']:.2f}", f"{x['private_mib']:.0f}" if x["private_mib"] is not None else "-",
                 " ".join(str(t) for t in x["first10_ms"][:6])]
                for side, label, x in (("candidate", result.candidate_label, candidate),
                                       ("baseline", result.baseline_label, baseline)) if x is not None]
        print(table(["", "what", "first hit s", "p50 ms", "private MiB", "first lookups ms"], rows, "llrrrl"), file=out)
        return result

    with report_stream(args.json) as (out, data):
        print_facts([("mode", "quick" if args.quick else "full"), ("entries", f"{entries:,}"),
                     ("embedder", "hashed bag of words, 384-d (a stand-in for the model)")], out)
        result = run_guarded("cold_worker", lambda: bench(out), out)
        if args.json:
            emit_json([result], data)
    return exit_code([result], args.strict)


if __name__ == "__main__":
    sys.exit(main())
