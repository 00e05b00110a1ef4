"""How often the semantic index's HNSW graph proposes the stored prompt a paraphrase asks for,
by ``expansion_search`` (issue 17: a missed proposal is a paid call).

    python benchmarks/bench_graph_recall.py [--quick] [--json] [--entries N]

The graph is built (as a snapshot's is, :func:`imgcache.match.semantic.mapped.new_graph`) over
N prompts of the cold-worker benchmark (default 1,000,000; ``--quick`` 100,000), embedded by
its stand-in (a hashed bag of words, 384-d: many near-identical vectors, which is hard on a
graph), saved and mapped with ``view`` as a worker maps it. For 500 evenly spread stored
prompts it asks the paraphrase "generate an image of " + the prompt (as the matcher embeds
it, filler removed) for the 16 nearest (twice ``SemanticOptions.candidates``, as the index
asks), and counts how often the stored prompt is among them. Side by side: the same query
scanned exactly (usearch's brute force over the same int8 vectors), the recall ceiling.

Exit status is 0 whatever the figures unless the benchmark could not run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

EXPANSIONS = (64, 128, 256)
ASKED = 500
PROPOSED = 16


def bench(entries: int, out: TextIO) -> Any:
    import numpy as np
    from _common import Result, table
    from bench_cold_worker import embed, prompt
    from usearch.index import Index

    from imgcache.match.semantic.mapped import new_graph
    from imgcache.match.semantic.verifier import content_text

    step = max(1, entries // ASKED)
    asked = list(range(0, entries, step))[:ASKED]
    graph = new_graph(384)
    started = time.perf_counter()
    for first in range(0, entries, 100_000):
        rows = range(first, min(entries, first + 100_000))
        graph.add(np.arange(rows.start, rows.stop), embed([content_text(prompt(i)) for i in rows]), threads=2)
    built = time.perf_counter() - started
    queries = embed([content_text("generate an image of " + prompt(i)) for i in asked]).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "graph.usearch")
        graph.save(path)
        del graph
        view = Index.restore(path, view=True)
        figures: dict[str, dict[str, float]] = {}
        for label, expansion, exact in [*((f"graph, expansion {e}", e, False) for e in EXPANSIONS),
                                        ("exact scan", 64, True)]:
            view.expansion_search = expansion
            timings, found = [], 0
            for row, query in zip(asked, queries):
                began = time.perf_counter()
                matches = view.search(query, PROPOSED, exact=exact)
                timings.append(time.perf_counter() - began)
                found += row in matches.keys.tolist()
            figures[label] = {"recall": found / len(asked), "p50_ms": statistics.median(timings) * 1000}
        del view
    print(f"graph of {entries:,} prompts built in {built:.0f} s (two threads)", file=out)
    print(table(["search", f"stored prompt among the first {PROPOSED}", "p50 ms"],
                [[label, f"{f['recall']:.1%}", f"{f['p50_ms']:.2f}"] for label, f in figures.items()], "lrr"),
          file=out)
    return Result("graph_recall", f"HNSW proposals over {entries:,} stored prompts", "the graph", "an exact scan",
                  extra={"entries": entries, "build_s": round(built, 1), "figures": figures})


def main(argv: list[str] | None = None) -> int:
    from _common import emit_json, exit_code, parser, print_facts, report_stream, run_guarded

    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=None, help="stored prompts (default 1,000,000; quick 100,000)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    entries = args.entries or (100_000 if args.quick else 1_000_000)
    with report_stream(args.json) as (out, data):
        print_facts([("entries", f"{entries:,}"), ("embedder", "hashed bag of words, 384-d (a stand-in)")], out)
        result = run_guarded("graph_recall", lambda: bench(entries, out), out)
        if args.json:
            emit_json([result], data)
    return exit_code([result], args.strict)


if __name__ == "__main__":
    sys.exit(main())
