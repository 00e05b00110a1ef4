"""The ``imgcache`` console script, run for real in subprocesses over a temporary directory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imgcache.stats import DESCRIPTIONS, MATCHES, TIERS
from imgcache.testing import FakeOpenAI
from imgcache.testing.servers import free_port, wait_until

from _helpers import responds

pytestmark = pytest.mark.slow  # the CLI (and the proxy) in processes

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
    every = stats_json(env_for(tmp_path / "cache"))
    assert set(every) == {"namespaces", "total", "truncated"} and every["truncated"] is False
    assert list(every["namespaces"]) == ["default"]  # nothing stored yet: the configured one
    one = stats_json(env_for(tmp_path / "cache"), "--namespace", "default")
    assert one == every["namespaces"]["default"]  # --namespace: that namespace's figures alone

    for figures in (one, every["total"]):
        assert set(DESCRIPTIONS) <= set(figures)
        assert all(figures[name] == 0 for name in DESCRIPTIONS)
        assert figures["by_tier"] == dict.fromkeys(TIERS, 0)
        assert figures["by_match"] == dict.fromkeys(MATCHES, 0)
        assert figures["tiers"] == {"memory": "up", "disk": "up"}
        assert figures["tier_errors"] == {"memory": 0, "disk": 0}  # every configured tier, failed or not
    assert one["namespace"] == "default" and every["total"]["namespaces"] == 1
    assert not (tmp_path / "cache").exists()  # reading the stats writes nothing


def test_stats_add_up_the_figures_of_every_process_sharing_the_directory(tmp_path: Path) -> None:
    env = env_for(tmp_path, IMGCACHE_NAMESPACE="shop")
    prompts = ["a red fox", "white sneakers", "a red fox", "A  RED FOX."]
    for _ in range(2):  # the first process: 2 misses, 2 memory hits; the second: 2 disk, 2 memory
        worker = python("-c", WORKER, *prompts, env=env)
        assert worker.returncode == 0, worker.stderr

    every = stats_json(env)
    assert list(every["namespaces"]) == ["shop"] and every["total"]["requests"] == 8
    figures = stats_json(env, "--namespace", "shop")
    assert figures == every["namespaces"]["shop"]
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

    from imgcache.cli.demo_run import run_demo

    out = io.StringIO()
    figures = run_demo(60, 0.01, tmp_path / "kept", False, Console(file=out, width=140))

    assert figures["requests"] == 60 and figures["errors"] == 0
    assert figures["upstream_calls"] + figures["hits"] == 60
    # Each prompt costs one call, or two when a paraphrase of it arrives while it is in flight.
    assert 0 < figures["hits"] and figures["distinct_prompts"] <= figures["upstream_calls"] < 60
    assert figures["saved_usd"] > 0 and figures["spent_usd"] > 0
    assert figures["upstream_calls"] == figures["distinct_prompts"] + figures["repeated_calls"]
    assert f"{figures['upstream_calls']}" in out.getvalue()

    # The kept directory answers a second run without any upstream call.
    again = run_demo(60, 0.01, tmp_path / "kept", False, Console(file=io.StringIO()))
    assert again["upstream_calls"] == 0 and again["hits"] == 60
    assert again["by_tier"]["disk"] >= again["distinct_prompts"]


PROGRESS_BAR = re.compile(r"Loading|\d+%\||it/s\]")
"""What a tqdm bar ("Loading weights: 100%|██████████| 103/103 [00:00<00:00, 30816.27it/s]") leaves."""


def demo_figures(stdout: str) -> dict[str, float]:
    rows = dict(re.findall(r"│ ([a-z][a-z ]+?)\s*│\s*~?\$?([\d,.]+)(?: s)?\s*│", stdout))
    return {name: float(value.replace(",", "")) for name, value in rows.items()}


def test_demo_shows_the_model_load_apart_and_no_progress_bar_outside_a_terminal(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = run("demo", "--requests", "60", "--latency", "0.05", env=env_for(tmp_path))
    elapsed = time.perf_counter() - started

    assert result.returncode == 0, result.stderr
    assert not PROGRESS_BAR.search(result.stdout + result.stderr), result.stdout + result.stderr
    assert result.stderr == ""
    figures = demo_figures(result.stdout)
    assert figures["model load"] > 0.5  # the model really loaded, and is shown on its own row
    assert figures["total time"] >= figures["model load"] + figures["replay time"]
    assert figures["total time"] <= elapsed  # the command's own time: nothing left out but start-up
    assert figures["upstream calls made"] == 60 - figures["upstream calls avoided"]


def test_demo_makes_one_upstream_call_per_distinct_prompt(tmp_path: Path) -> None:
    result = run("demo", env=env_for(tmp_path))  # the defaults: 200 requests, 0.2 s a call, 4 threads

    assert result.returncode == 0, result.stderr
    distinct = re.search(r"requests\s*│\s*200\s*│\s*(\d+) distinct prompts", result.stdout)
    assert distinct, result.stdout
    assert demo_figures(result.stdout)["upstream calls made"] == int(distinct.group(1)), result.stdout


def test_the_proxy_loading_the_model_writes_only_json_lines_of_access_log(tmp_path: Path) -> None:
    """``imgcache serve`` loads the model on its first semantic lookup: its progress bar must not
    land in the JSON access log on stderr (not a terminal here, as in any log collector)."""
    with proxy(env_for(tmp_path)) as (url, process):
        first = generate(url, "sk-log", "a red fox in snow, photo")  # an exact miss: the model loads
        assert first.headers["x-imgcache"].startswith("miss")
        again = generate(url, "sk-log", "Generate an image of a red fox in snow, photo")
        assert again.headers["x-imgcache"].startswith("hit") and "semantic" in again.headers["x-imgcache"]
        process.terminate()
        err = process.communicate(timeout=TIMEOUT)[1]

    lines = err.splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]  # every one parses
    assert [entry["path"] for entry in logged if entry["path"] != "/healthz"] == ["/v1/images/generations"] * 2
    bad = [line for line in lines if PROGRESS_BAR.search(line) or "\r" in line]
    assert not bad, err


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
    assert json.loads(result.stdout)["total"]["requests"] == 0
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_stats_add_up_the_processes_sharing_a_redis(tmp_path: Path, redis_url: str) -> None:
    env = env_for(tmp_path, IMGCACHE_REDIS_URL=redis_url)
    del env["IMGCACHE_DIR"]  # Redis alone: memory in each process, the counters in Redis
    for prompts in (["a cat", "a cat"], ["a cat", "a dog"]):
        worker = python("-c", WORKER, *prompts, env=env)
        assert worker.returncode == 0, worker.stderr

    figures = stats_json(env)["namespaces"]["default"]
    assert (figures["requests"], figures["hits"], figures["upstream_calls"]) == (4, 2, 2)
    assert figures["by_tier"] == {"memory": 1, "disk": 0, "redis": 1, "s3": 0}
    assert figures["tiers"] == {"memory": "up", "redis": "up"}
    assert figures["tier_errors"] == {"memory": 0, "redis": 0}


# Calls in several namespaces from one process: argv is NAMESPACE=PROMPT,PROMPT ...
MANY = """
import sys
from imgcache import Cache

base = Cache.from_env(semantic=False)
for spec in sys.argv[1:]:
    namespace, _, prompts = spec.partition("=")
    cache = base.for_namespace(namespace)

    @cache.cached(kind="generation", name="tests.draw", cost_usd=0.04)
    def draw(*, prompt):
        return b"png:" + prompt.encode()

    for prompt in prompts.split(","):
        draw(prompt=prompt)
    cache.close()
base.close()
"""


@contextlib.contextmanager
def proxy(env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``imgcache serve`` in a subprocess (stderr captured) with a fake upstream: (its URL, process)."""
    with FakeOpenAI(image_size=(16, 16)) as fake:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "imgcache.cli", "serve", "--port", str(port),
                                    "--upstream", fake.base_url, *args],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            assert wait_until(lambda: process.poll() is not None or responds(f"{url}/healthz"), TIMEOUT)
            assert process.poll() is None, process.communicate()[1]
            yield url, process
        finally:
            if process.poll() is None:
                process.terminate()
            process.communicate(timeout=TIMEOUT)


def generate(url: str, api_key: str, prompt: str) -> httpx.Response:
    answer = httpx.post(f"{url}/v1/images/generations", json={"model": "dall-e-2", "prompt": prompt},
                        headers={"authorization": f"Bearer {api_key}"}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer


def test_stats_shows_every_tenant_of_the_proxy_and_their_total(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    with proxy(env, "--no-semantic") as (url, _):  # the default: a namespace per API key
        for key, prompt in [("sk-alice", "a red fox"), ("sk-alice", "a red fox"), ("sk-alice", "a blue fox"),
                            ("sk-bob", "a red fox")]:
            generate(url, key, prompt)

    every = stats_json(env)
    tenants = every["namespaces"]
    assert len(tenants) == 2 and all(re.fullmatch(r"default\.k[0-9a-f]{20}", name) for name in tenants)
    assert sorted((f["requests"], f["hits"], f["upstream_calls"]) for f in tenants.values()) == [(1, 0, 1), (3, 1, 2)]
    total = every["total"]
    assert (total["requests"], total["hits"], total["upstream_calls"], total["namespaces"]) == (4, 1, 3, 2)
    assert total["saved_usd"] == pytest.approx(0.02) and total["spent_usd"] == pytest.approx(0.06)
    assert total["tier_errors"] == {"memory": 0, "disk": 0}

    busy = next(name for name, f in tenants.items() if f["requests"] == 3)
    assert stats_json(env, "--namespace", busy) == tenants[busy]

    table = run("stats", env=env)
    assert table.returncode == 0, table.stderr
    for name in tenants:
        assert f"namespace '{name}'" in table.stdout
    assert "total of 2 namespaces" in table.stdout
    assert re.search(r"requests\s*│\s*4\s*│", table.stdout), table.stdout


def test_stats_finds_the_namespaces_of_a_redis_with_scan(tmp_path: Path, redis_url: str) -> None:
    env = env_for(tmp_path, IMGCACHE_REDIS_URL=redis_url)
    del env["IMGCACHE_DIR"]
    worker = python("-c", MANY, "shop=a,b,a", "default.k0123456789abcdef0123=c", "team-x=d", env=env)
    assert worker.returncode == 0, worker.stderr
    import redis

    client = redis.Redis.from_url(redis_url)
    client.hset("imgcache:not:a:namespace:stats", "requests", 5)  # never a namespace: ':' in it
    client.hset("other-app:shop:stats", "requests", 5)  # another prefix

    every = stats_json(env)
    assert {name: f["requests"] for name, f in every["namespaces"].items()} == {
        "default.k0123456789abcdef0123": 1, "shop": 3, "team-x": 1}
    assert every["total"]["requests"] == 5 and every["total"]["hits"] == 1
    assert every["total"]["tier_errors"] == {"memory": 0, "redis": 0}


@pytest.mark.parametrize("where", ["directory", "redis"])
def test_the_namespace_search_is_bounded_and_says_so(where: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    from imgcache import Cache
    options = ({"redis_url": request.getfixturevalue("redis_url")} if where == "redis"
               else {"directory": tmp_path / "cache"})
    with Cache(semantic=False, **options) as cache:
        for i in range(7):
            view = cache.for_namespace(f"ns{i}")
            view.stats_counters.add({"requests": 1})
            view.close()
        assert cache.namespaces(limit=10) == ([f"ns{i}" for i in range(7)], False)
        names, truncated = cache.namespaces(limit=3)
        assert len(names) == 3 and truncated and set(names) < {f"ns{i}" for i in range(7)}


def test_many_namespaces_get_a_row_each_then_the_total(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    specs = [f"tenant{i:02d}=" + ",".join(["p"] * (i + 1)) for i in range(12)]
    worker = python("-c", MANY, *specs, env=env)
    assert worker.returncode == 0, worker.stderr

    table = run("stats", env=env)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "12 namespaces, busiest first" in out and "total of 12 namespaces" in out
    rows = re.findall(r"│ (tenant\d\d)\s*│\s*([\d,]+)\s*│", out)
    assert rows == [(f"tenant{i:02d}", str(i + 1)) for i in reversed(range(12))], out
    assert re.search(r"requests\s*│\s*78\s*│", out)  # 1 + 2 + ... + 12


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

    figures = stats_json(env, "--namespace", "default")
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
    assert entries() == [] and stats_json(env)["total"]["requests"] == 4  # the counters stay


@pytest.mark.parametrize("args", [["--max-size", "lots"], ["--grace", "soon"]])
def test_prune_with_a_bad_value_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    result = run("prune", *args, env=env_for(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "imgcache: error:" in result.stderr


def test_prune_without_a_local_directory_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in env_for(tmp_path).items() if k != "IMGCACHE_DIR"}
    result = run("prune", env={**env, "IMGCACHE_REDIS_URL": "redis://127.0.0.1:1"})
    assert result.returncode == 2 and "IMGCACHE_DIR" in result.stderr
