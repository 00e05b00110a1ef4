"""Helpers shared by the benchmarks: paired timing loops, result tables, ``--json`` output.

Every benchmark compares a *candidate* (imgcache doing something) with a *baseline* (the
same work done without imgcache), measured side by side in one run: :func:`compare` runs
them in alternating rounds (candidate first in even rounds, baseline first in odd ones) so
that machine noise, CPU frequency changes and background threads hit both alike.

Figures are per call, in microseconds, from :func:`time.perf_counter_ns`. The ratio is
candidate p50 / baseline p50. Targets are checked and reported by the benchmark itself,
never asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# -- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Per-call latencies of one side of a comparison, in microseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    n: int

    @classmethod
    def from_ns(cls, samples_ns: Sequence[float]) -> Figures:
        if not samples_ns:
            raise ValueError("no samples")
        ordered = sorted(samples_ns)
        return cls(
            p50=percentile(ordered, 50) / 1000,
            p90=percentile(ordered, 90) / 1000,
            p99=percentile(ordered, 99) / 1000,
            mean=sum(ordered) / len(ordered) / 1000,
            n=len(ordered),
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "p50_us": round(self.p50, 3),
            "p90_us": round(self.p90, 3),
            "p99_us": round(self.p99, 3),
            "mean_us": round(self.mean, 3),
            "n": self.n,
        }


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile of already sorted samples (numpy's default method)."""
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * pct / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


# -- timing ----------------------------------------------------------------------------------


def _run(fn: Callable[[], Any], calls: int, batch: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    if batch == 1:
        for _ in range(calls):
            started = clock()
            fn()
            out.append(clock() - started)
    else:
        for _ in range(calls):
            started = clock()
            for _ in range(batch):
                fn()
            out.append((clock() - started) / batch)


def measure(
    sides: Sequence[Callable[[], Any]],
    *,
    rounds: int,
    per_round: int,
    warmup: int = 10,
    batch: int = 1,
) -> list[Figures]:
    """Time several callables in rounds after a warm-up of each; one Figures per callable.

    Each round makes ``per_round`` samples of every side in turn; the order rotates from
    round to round (two sides: A B, B A, A B, ...), so that drifting machine noise falls on
    all sides alike. A sample is one call, or the mean of ``batch`` back-to-back calls (for
    operations so short that the clock's own cost would matter).
    """
    for _ in range(warmup):
        for fn in sides:
            fn()
    gc.collect()
    samples: list[list[float]] = [[] for _ in sides]
    indexed = list(enumerate(sides))
    for index in range(rounds):
        shift = index % len(indexed)
        for position, fn in indexed[shift:] + indexed[:shift]:
            _run(fn, per_round, batch, samples[position])
    return [Figures.from_ns(s) for s in samples]


def compare(
    candidate: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    rounds: int,
    per_round: int,
    warmup: int = 10,
    batch: int = 1,
) -> tuple[Figures, Figures]:
    """``(candidate, baseline)`` figures from :func:`measure`, in alternating rounds."""
    cand, base = measure([candidate, baseline], rounds=rounds, per_round=per_round,
                         warmup=warmup, batch=batch)
    return cand, base


# -- results ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    """A stable identifier (``memory_hit_decorator``), used by ``--json`` consumers."""
    title: str
    candidate_label: str
    baseline_label: str
    candidate: Figures | None = None
    baseline: Figures | None = None
    target: str | None = None
    """What the figures must meet, in words; None when the benchmark has no target."""
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.candidate is None or self.baseline is None or self.baseline.p50 <= 0:
            return None
        return self.candidate.p50 / self.baseline.p50

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.passed is None:
            return "no target"
        return "PASS" if self.passed else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "name": self.name,
            "title": self.title,
            "candidate": None if self.candidate is None else {
                "label": self.candidate_label, **self.candidate.as_dict()},
            "baseline": None if self.baseline is None else {
                "label": self.baseline_label, **self.baseline.as_dict()},
            "ratio": None if ratio is None else round(ratio, 4),
            "target": self.target,
            "pass": self.passed,
            "verdict": self.verdict,
            "notes": list(self.notes),
            **({"error": self.error} if self.error is not None else {}),
            **self.extra,
        }


# -- printing --------------------------------------------------------------------------------


def fmt_us(value: float) -> str:
    """Microseconds with about four significant digits, thousands separated."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Plain aligned text; ``align`` has one ``l`` or ``r`` per column (default: l then r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(cell).ljust(width) if how == "l" else str(cell).rjust(width)
            for cell, width, how in zip(cells, widths, align)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def report(result: Result, out: TextIO) -> None:
    """One benchmark's block: both sides' figures, the ratio, the target and the verdict."""
    print(f"\n== {result.name}: {result.title}", file=out)
    if result.error is not None:
        print(f"   ERROR: {result.error}", file=out)
        return
    rows = []
    for side, label, figures in (
        ("candidate", result.candidate_label, result.candidate),
        ("baseline", result.baseline_label, result.baseline),
    ):
        assert figures is not None
        rows.append([side, label, fmt_us(figures.p50), fmt_us(figures.p90), fmt_us(figures.p99),
                     fmt_us(figures.mean), str(figures.n)])
    print(table(["", "what", "p50 µs", "p90 µs", "p99 µs", "mean µs", "n"], rows, "llrrrrr"), file=out)
    ratio = result.ratio
    print(f"ratio (candidate p50 / baseline p50): {ratio:.2f}x" if ratio is not None else "ratio: n/a",
          file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    print(f"target: {result.target or 'none (reported only)'}  ->  {result.verdict}", file=out)


def summary(results: Sequence[Result], out: TextIO) -> None:
    rows = []
    for r in results:
        ratio = r.ratio
        rows.append([
            r.name,
            "-" if r.candidate is None else fmt_us(r.candidate.p50),
            "-" if r.baseline is None else fmt_us(r.baseline.p50),
            "-" if ratio is None else f"{ratio:.2f}x",
            r.target or "none",
            r.verdict,
        ])
    print("\n== summary (p50, µs)", file=out)
    print(table(["benchmark", "candidate", "baseline", "ratio", "target", "result"], rows, "lrrrll"),
          file=out)


def machine_facts() -> list[tuple[str, str]]:
    facts = [("python", f"{platform.python_implementation()} {platform.python_version()}"),
             ("platform", platform.platform())]
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts.append(("cpu", cpu or "unknown"))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts.append(("cores", f"{os.cpu_count()} logical, {usable} usable by this process"))
    return facts


def print_facts(extra: Sequence[tuple[str, str]], out: TextIO) -> None:
    rows = [[k, v] for k, v in [*machine_facts(), *extra]]
    print(table(["machine", ""], rows, "ll"), file=out)


# -- command line ----------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="short loops (a smoke run, noisier figures)")
    p.add_argument("--json", action="store_true",
                   help="print the results as a JSON list on stdout (the text report goes to stderr)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p


@contextlib.contextmanager
def report_stream(json_mode: bool) -> Iterator[tuple[TextIO, TextIO]]:
    """``(text, data)`` streams: in JSON mode the text report goes to stderr and anything
    that prints to stdout meanwhile is diverted there too, so stdout holds only the JSON."""
    if not json_mode:
        yield sys.stdout, sys.stdout
        return
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        yield sys.stderr, real_stdout


def emit_json(results: Sequence[Result], out: TextIO) -> None:
    json.dump([r.as_dict() for r in results], out, indent=2, ensure_ascii=False)
    out.write("\n")
    out.flush()


def run_guarded(name: str, fn: Callable[[], Result], out: TextIO, title: str = "could not run") -> Result:
    """Run one benchmark; an exception becomes an ERROR result (traceback on ``out``), so the
    others still run and the process exits 1."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported, and the run exits 1
        traceback.print_exc(file=out)
        return Result(name, title, "", "", error=f"{type(exc).__name__}: {exc}")


def exit_code(results: Sequence[Result], strict: bool) -> int:
    if any(r.error is not None for r in results):
        return 1
    if strict and any(r.passed is False for r in results):
        return 1
    return 0


# -- evaluation data ---------------------------------------------------------------------------

# The evaluation data (tuning and benchmarks only; tests never read it) lives beside the
# repository, not in it: a clone with nothing beside it has none, and a benchmark that needs it
# says so and skips (exit 0).
EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval"


def skip_run(names: Sequence[str], reason: str, json_mode: bool) -> int:
    """Report that the benchmarks ``names`` did not run: ``skipped: <reason>`` on the text
    stream (stderr with ``--json``) and, with ``--json``, one result per name on stdout with
    ``"skipped"`` set and verdict ``SKIPPED``. Returns the exit status, 0."""
    with report_stream(json_mode) as (out, data):
        print(f"skipped: {reason}", file=out)
        if json_mode:
            json.dump([{"name": name, "skipped": reason, "pass": None, "verdict": "SKIPPED"}
                       for name in names], data, indent=2)
            data.write("\n")
            data.flush()
    return 0
