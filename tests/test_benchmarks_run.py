"""Smoke test: the benchmark file runs and reports every benchmark with numeric figures.

Speed is judged by the benchmark itself (it prints PASS/FAIL per target); this test only
checks that it runs, so it never fails because a machine is slow.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_cache.py"
NAMES = {
    "memory_hit_decorator",
    "redis_hit_1mib",
    "s3_hit_1mib",
    "s3_only_hit_1mib",
    "openai_miss_overhead",
    "decorator_miss_1mib",
}
FIGURES = ("p50_us", "p90_us", "p99_us", "mean_us")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(180)
def test_bench_cache_quick_json() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    for module in ("redis", "boto3", "moto", "openai"):
        pytest.importorskip(module)

    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--quick", "--json"],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"bench_cache.py --quick did not finish in 120 s; stderr:\n{exc.stderr}")
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr[-4000:]}"

    results = json.loads(proc.stdout)
    assert isinstance(results, list)
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == NAMES, proc.stderr[-4000:]
    for name, result in by_name.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        for side in ("candidate", "baseline"):
            figures = result[side]
            assert isinstance(figures, dict), f"{name}: no {side} figures"
            for key in FIGURES:
                assert _number(figures[key]) and figures[key] > 0, f"{name} {side} {key}: {figures[key]!r}"
            assert isinstance(figures["n"], int) and figures["n"] > 0
        assert _number(result["ratio"]) and result["ratio"] > 0, f"{name}: ratio {result['ratio']!r}"
        assert "target" in result and "pass" in result
        assert result["pass"] in (True, False, None)
    # The text report, with both sides of every comparison, went to stderr.
    for name in NAMES:
        assert name in proc.stderr
