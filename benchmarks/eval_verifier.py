"""Accuracy and speed of the prompt verifier alone (no embedder, no index, no cache).

Runs :func:`imgcache.match.semantic.verifier.verify` over the labelled pairs in
``<repo>/../shared/eval/prompt_pairs_dev.jsonl`` (both sides through ``normalize_prompt``)
and prints, per kind: n, accepted (would-be hits), and the false-accept rate for "different"
kinds or the accept rate for "same" kinds, with the targets checked. Then the false accepts
in full, a sample of false rejects (to review the lexicon), and the time per verify call.

    python3 benchmarks/eval_verifier.py [--pairs PATH] [--rejects N] [--json]

The default pairs file is evaluation data beside the repository, not in it: without ``--pairs``
and with no ``../shared/eval`` beside the repository, it prints ``skipped: ../shared/eval not
found ...`` (with ``--json``: ``{"skipped": "..."}``) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from imgcache.match.semantic import verifier as verify_module
from imgcache.match.semantic.verifier import verify
from imgcache.normalize import normalize_prompt

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = ROOT.parent / "shared" / "eval" / "prompt_pairs_dev.jsonl"

MAX_FALSE_ACCEPT = 0.01  # per "different" kind
MIN_ACCEPT = {"pos_surface": 1.0}  # per "same" kind; others: DEFAULT_MIN_ACCEPT
DEFAULT_MIN_ACCEPT = 0.60


def load(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def evaluate(rows: list[dict[str, str]]) -> dict[str, object]:
    per_kind: dict[str, dict[str, object]] = defaultdict(lambda: {"n": 0, "accepted": 0})
    false_accepts: list[tuple[str, str, str, str]] = []
    false_rejects: list[tuple[str, str, str, str]] = []
    for row in rows:
        stored, query = normalize_prompt(row["anchor"]), normalize_prompt(row["query"])
        verdict = verify(stored, query)
        stats = per_kind[row["kind"]]
        stats["label"] = row["label"]
        stats["n"] += 1
        stats["accepted"] += verdict.same
        if verdict.same and row["label"] == "different":
            false_accepts.append((row["kind"], stored, query, verdict.reason))
        elif not verdict.same and row["label"] == "same":
            false_rejects.append((row["kind"], stored, query, verdict.reason))
    return {"kinds": dict(per_kind), "false_accepts": false_accepts,
            "false_rejects": false_rejects}


def timing(rows: list[dict[str, str]], rounds: int = 3) -> dict[str, float]:
    """Microseconds per verify call, with the per-prompt analysis cache cleared each call."""
    pairs = [(normalize_prompt(r["anchor"]), normalize_prompt(r["query"])) for r in rows]
    samples: list[float] = []
    clear = verify_module._analyse.cache_clear
    for _ in range(rounds):
        for stored, query in pairs:
            clear()
            start = time.perf_counter_ns()
            verify(stored, query)
            samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    long_prompt = ("a red fox in the snow, " * 4400)[:100_000]
    clear()
    start = time.perf_counter_ns()
    verify(long_prompt, long_prompt + " x")
    long_ms = (time.perf_counter_ns() - start) / 1e6
    return {
        "mean_us": statistics.fmean(samples),
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[int(len(samples) * 0.99)],
        "long_100k_ms": long_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=None,
                        help=f"labelled pairs, JSONL (default {DEFAULT_PAIRS}, from ../shared/eval beside "
                             "the repository: without it and without --pairs, skipped, exit 0)")
    parser.add_argument("--rejects", type=int, default=25, help="false rejects to show")
    parser.add_argument("--json", action="store_true", help="print figures as JSON only")
    args = parser.parse_args(argv)
    if args.pairs is None:
        if not DEFAULT_PAIRS.is_file():
            reason = (f"../shared/eval not found (no {DEFAULT_PAIRS}); the labelled pairs live beside "
                      "the repository: pass --pairs PATH to use another file")
            print(f"skipped: {reason}", file=sys.stderr)
            if args.json:
                json.dump({"skipped": reason, "pass": None}, sys.stdout, indent=2)
                print()
            return 0
        args.pairs = DEFAULT_PAIRS
    elif not args.pairs.is_file():
        parser.error(f"--pairs: no such file: {args.pairs}")

    rows = load(args.pairs)
    result = evaluate(rows)
    times = timing(rows)
    kinds: dict[str, dict[str, object]] = result["kinds"]  # type: ignore[assignment]
    ok = True
    table = []
    for kind in sorted(kinds, key=lambda k: (kinds[k]["label"] != "same", k)):
        stats = kinds[kind]
        n, accepted = int(stats["n"]), int(stats["accepted"])
        rate = accepted / n if n else 0.0
        if stats["label"] == "same":
            target = MIN_ACCEPT.get(kind, DEFAULT_MIN_ACCEPT)
            passed = rate >= target
            goal = f"accept rate {rate:7.1%}  (>= {target:.0%})"
        else:
            passed = rate <= MAX_FALSE_ACCEPT
            goal = f"false accepts {rate:5.1%}  (<= {MAX_FALSE_ACCEPT:.0%})"
        ok &= passed
        table.append({"kind": kind, "label": stats["label"], "n": n, "accepted": accepted,
                      "rate": rate, "pass": passed})
        if not args.json:
            print(f"{kind:15s} {stats['label']:9s} n={n:5d} accepted={accepted:5d}  {goal}"
                  f"  {'PASS' if passed else 'FAIL'}")
    if args.json:
        json.dump({"kinds": table, "timing": times, "pass": ok}, sys.stdout, indent=2)
        print()
        return 0 if ok else 1

    false_accepts = result["false_accepts"]
    false_rejects = result["false_rejects"]
    print(f"\nfalse accepts ({len(false_accepts)}):")  # type: ignore[arg-type]
    for kind, stored, query, reason in false_accepts:  # type: ignore[union-attr]
        print(f"  [{kind}] {stored!r}\n      vs {query!r}\n      -> {reason}")
    print(f"\nfalse rejects ({len(false_rejects)}), a sample:")  # type: ignore[arg-type]
    sample = random.Random(0).sample(false_rejects, min(args.rejects, len(false_rejects)))
    for kind, stored, query, reason in sample:  # type: ignore[misc]
        print(f"  [{kind}] {stored[:110]!r}\n      vs {query[:110]!r}\n      -> {reason}")
    print(
        f"\ntiming per verify call (analysis cache cleared): mean {times['mean_us']:.1f} us, "
        f"p50 {times['p50_us']:.1f} us, p99 {times['p99_us']:.1f} us; "
        f"100,000-character prompt: {times['long_100k_ms']:.1f} ms"
    )
    print("ALL TARGETS PASS" if ok else "SOME TARGETS FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
