"""The ``imgcache`` console script, run for real in subprocesses over a temporary directory."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgcache.stats import DESCRIPTIONS, MATCHES, TIERS

TIMEOUT = 60

# A separate process that makes calls through a cache configured from the environment.
WORKER = """
import sys
from imgcache import Cache

cache = Cache.from_env()

@cache.cached(kind="generation", name="tests.draw", cost_usd=0.04)
def draw(*, prompt, size="1024x1024"):
    return b"png:" + prompt.encode()

for prompt in sys.argv[1:]:
    draw(prompt=prompt)
cache.close()
"""


def env_for(directory: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCACHE_")}
    env.update(IMGCACHE_DIR=str(directory), COLUMNS="140", NO_COLOR="1", **extra)
    return env


def python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script, as ``python -m imgcache.cli``."""
    return python("-m", "imgcache.cli", *args, env=env)


def stats_json(env: dict[str, str], *args: str) -> dict:
    result = run("stats", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_stats_json_on_an_empty_directory_gives_zeros_with_every_key(tmp_path: Path) -> None:
    figures = stats_json(env_for(tmp_path / "cache"))

    assert set(DESCRIPTIONS) <= set(figures)
    assert all(figures[name] == 0 for name in DESCRIPTIONS)
    assert figures["by_tier"] == dict.fromkeys(TIERS, 0)
    assert figures["by_match"] == dict.fromkeys(MATCHES, 0)
    assert figures["namespace"] == "default"
    assert figures["tiers"] == {"memory": "up", "disk": "up"}
    assert not (tmp_path / "cache").exists()  # reading the stats writes nothing


def test_stats_add_up_the_figures_of_every_process_sharing_the_directory(tmp_path: Path) -> None:
    env = env_for(tmp_path, IMGCACHE_NAMESPACE="shop")
    prompts = ["a red fox", "white sneakers", "a red fox", "A  RED FOX."]
    for _ in range(2):  # the first process: 2 misses, 2 memory hits; the second: 2 disk, 2 memory
        worker = python("-c", WORKER, *prompts, env=env)
        assert worker.returncode == 0, worker.stderr

    figures = stats_json(env)
    assert figures["namespace"] == "shop"
    assert (figures["requests"], figures["hits"], figures["misses"]) == (8, 6, 2)
    assert figures["upstream_calls"] == figures["stored"] == 2
    assert figures["by_tier"] == {"memory": 4, "disk": 2, "redis": 0, "s3": 0}
    assert figures["by_match"]["exact"] == 6
    assert figures["saved_usd"] == pytest.approx(0.24)
    assert figures["spent_usd"] == pytest.approx(0.08)

    assert stats_json(env, "--namespace", "elsewhere")["requests"] == 0

    table = run("stats", env=env)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "namespace 'shop'" in out
    for label, value in [
        ("requests", "8"),
        ("hit rate", "75.0%"),
        ("hits from memory", "4"),
        ("hits from disk", "2"),
        ("upstream calls", "2"),
        ("dollars saved", "$0.24"),
        ("dollars spent", "$0.08"),
        ("disk errors", "0"),
    ]:
        assert re.search(rf"{re.escape(label)}\s*│\s*{re.escape(value)}\s*│", out), (label, out)
    assert str(tmp_path) in out  # the configuration it read
    assert re.search(r"disk tier\s*│\s*up", out)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMGCACHE_TTL", "soon"),
        ("IMGCACHE_MEMORY_BYTES", "lots"),
        ("IMGCACHE_NAMESPACE", "no/slashes"),
    ],
)
def test_stats_with_a_bad_configuration_value_exits_2_with_one_line(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = run("stats", env=env_for(tmp_path, **{variable: value}))

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgcache: error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_demo_command_avoids_upstream_calls(tmp_path: Path) -> None:
    result = run("demo", "--requests", "60", "--latency", "0.01", env=env_for(tmp_path))

    assert result.returncode == 0, result.stderr
    made = re.search(r"upstream calls made\s*│\s*(\d+)", result.stdout)
    avoided = re.search(r"upstream calls avoided\s*│\s*(\d+)", result.stdout)
    assert made and avoided, result.stdout
    assert int(made.group(1)) < 60
    assert int(made.group(1)) + int(avoided.group(1)) == 60
    assert "dollars saved" in result.stdout and "hits by tier" in result.stdout


def test_run_demo_in_process_returns_what_it_printed(tmp_path: Path) -> None:
    from rich.console import Console

    from imgcache.demo import run_demo

    out = io.StringIO()
    figures = run_demo(60, 0.01, tmp_path / "kept", False, Console(file=out, width=140))

    assert figures["requests"] == 60 and figures["errors"] == 0
    assert figures["upstream_calls"] + figures["hits"] == 60
    # Each prompt costs one call, or two when a paraphrase of it arrives while it is in flight.
    assert 0 < figures["hits"] and figures["distinct_prompts"] <= figures["upstream_calls"] < 60
    assert figures["saved_usd"] > 0 and figures["spent_usd"] > 0
    assert f"{figures['upstream_calls']}" in out.getvalue()

    # The kept directory answers a second run without any upstream call.
    again = run_demo(60, 0.01, tmp_path / "kept", False, Console(file=io.StringIO()))
    assert again["upstream_calls"] == 0 and again["hits"] == 60
    assert again["by_tier"]["disk"] >= again["distinct_prompts"]


def test_stats_command_loads_no_heavy_libraries(tmp_path: Path) -> None:
    script = """
import sys
sys.argv = ["imgcache", "stats", "--json"]
from imgcache.cli import main
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = ("torch", "sentence_transformers", "numpy", "openai", "boto3", "botocore", "redis")
print(sorted(name for name in heavy if name in sys.modules), file=sys.stderr)
"""
    result = python("-c", script, env=env_for(tmp_path))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["requests"] == 0
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_stats_add_up_the_processes_sharing_a_redis(tmp_path: Path, redis_url: str) -> None:
    env = env_for(tmp_path, IMGCACHE_REDIS_URL=redis_url)
    del env["IMGCACHE_DIR"]  # Redis alone: memory in each process, the counters in Redis
    for prompts in (["a cat", "a cat"], ["a cat", "a dog"]):
        worker = python("-c", WORKER, *prompts, env=env)
        assert worker.returncode == 0, worker.stderr

    figures = stats_json(env)
    assert (figures["requests"], figures["hits"], figures["upstream_calls"]) == (4, 2, 2)
    assert figures["by_tier"] == {"memory": 1, "disk": 0, "redis": 1, "s3": 0}
    assert figures["tiers"] == {"memory": "up", "redis": "up"}


def test_stats_with_an_unreachable_redis_fails_with_one_line(tmp_path: Path) -> None:
    env = env_for(tmp_path, IMGCACHE_REDIS_URL="redis://127.0.0.1:1/0")
    result = run("stats", "--json", env=env)

    assert result.returncode == 1
    assert result.stderr.startswith("imgcache: error: cannot read the shared counters")
    assert "Traceback" not in result.stderr


def test_semantic_hits_show_in_stats_and_inspect_explains_a_prompt(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    for prompts in (["a photo of a red fox in snow"], ["red fox in the snow, photo"]):
        worker = python("-c", WORKER, *prompts, env=env)
        assert worker.returncode == 0, worker.stderr

    figures = stats_json(env)
    assert figures["by_match"]["semantic"] == 1 and figures["upstream_calls"] == 1
    (recent,) = figures["recent_semantic_hits"]
    assert recent["query"] == "red fox in the snow, photo"
    assert recent["matched"] == "a photo of a red fox in snow"
    assert 0 < recent["similarity"] <= 1 and recent["verdict"].startswith("same")
    assert "recent semantic hits" in run("stats", env=env).stdout

    explained = run("inspect", "A photograph of a BLUE fox in snow", "--op", "tests.draw",
                    "-p", "size=1024x1024", env=env)
    assert explained.returncode == 0, explained.stderr
    out = explained.stdout
    assert "exact entry none" in out
    assert "a photo of a red fox in snow" in out and "different" in out and "blue" in out


def test_prune_reports_evicts_and_keeps_counters(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    assert python("-c", WORKER, "p0", "p1", "p2", "p3", env=env).returncode == 0
    entries = lambda: sorted(tmp_path.glob("*/e/*/*"))  # noqa: E731

    dry = run("prune", "--max-size", "1", "--grace", "0", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    figures = json.loads(dry.stdout)
    assert (figures["dry_run"], figures["evicted"], figures["orphans"]) == (True, 4, 4)
    assert figures["directory"] == str(tmp_path) and len(entries()) == 4

    done = run("prune", "--max-size", "1", "--grace", "0", env=env)
    assert done.returncode == 0, done.stderr
    assert "removed 0 expired, 0 damaged and 4 evicted entries, 4 unused blobs" in done.stdout
    assert entries() == [] and stats_json(env)["requests"] == 4  # the counters stay


@pytest.mark.parametrize("args", [["--max-size", "lots"], ["--grace", "soon"]])
def test_prune_with_a_bad_value_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    result = run("prune", *args, env=env_for(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "imgcache: error:" in result.stderr


def test_prune_without_a_local_directory_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in env_for(tmp_path).items() if k != "IMGCACHE_DIR"}
    result = run("prune", env={**env, "IMGCACHE_REDIS_URL": "redis://127.0.0.1:1"})
    assert result.returncode == 2 and "IMGCACHE_DIR" in result.stderr
