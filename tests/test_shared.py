"""A fleet sharing Redis and S3: several Cache objects stand in for processes, and real
subprocesses check what only separate processes can (stats, single-flight, a dying holder)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from imgcache import Cache
from imgcache.testing import wait_until

from _helpers import Upstream, expected, generator

WORKER = r'''
import json, os, sys, threading, time
from pathlib import Path
from imgcache import Cache

cfg = json.loads(sys.argv[1])
log = Path(cfg["log"])
cache = Cache(cfg["namespace"], redis_url=cfg["redis_url"], lock_timeout=cfg.get("lock_timeout", 10.0))

@cache.cached(name="gen")
def generate(*, prompt):
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {prompt}\n")
    if cfg.get("started"):
        Path(cfg["started"]).write_text("started")
    time.sleep(cfg.get("sleep", 0.0))
    return f"image for {prompt} by {os.getpid()} at {time.time_ns()}".encode()

def wait_for(path):
    deadline = time.monotonic() + 30
    while not Path(path).exists():
        if time.monotonic() > deadline:
            sys.exit("gave up waiting for " + path)
        time.sleep(0.01)

results = []
if cfg["mode"] == "calls":
    for prompt in cfg["prompts"]:
        results.append(generate(prompt=prompt).decode())
elif cfg["mode"] == "flight":
    barrier = threading.Barrier(cfg["threads"])
    lock = threading.Lock()
    def worker():
        barrier.wait()
        value = generate(prompt=cfg["prompt"]).decode()
        with lock:
            results.append(value)
    threads = [threading.Thread(target=worker) for _ in range(cfg["threads"])]
    Path(cfg["ready"]).write_text("ready")
    wait_for(cfg["go"])
    for t in threads:
        t.start()
    for t in threads:
        t.join()
cache.close()
print(json.dumps({"results": results, "stats": cache.stats()}))
'''


def large(prompt: str) -> bytes:
    """8 KiB, a function of the prompt."""
    return (hashlib.sha256(expected(prompt)).digest() * 257)[:8192]


def raw_redis(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=2.0)


@pytest.fixture
def worker_script(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def spawn(script: Path, **config: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"worker failed ({process.returncode}):\n{err}"
    return json.loads(out.strip().splitlines()[-1])


# --- a fleet of cache objects --------------------------------------------------------------


def test_entries_flow_through_redis_and_s3_and_promote(redis_url: str, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    upstream = Upstream()
    shared = {"redis_url": redis_url, "s3_bucket": bucket, "s3_endpoint_url": endpoint}
    with Cache("fleet", **shared) as a:
        value = generator(a, upstream)(prompt="a red fox")
        a.flush()  # S3 may be written in the background
    assert upstream.calls == 1

    with Cache("fleet", **shared) as b:
        assert generator(b, upstream)(prompt="A red fox.") == value
        assert b.stats()["by_tier"]["redis"] == 1

    with Cache("fleet", s3_bucket=bucket, s3_endpoint_url=endpoint) as c:
        generate = generator(c, upstream)
        assert generate(prompt="a red fox") == value
        assert c.stats()["by_tier"]["s3"] == 1
        assert generate(prompt="a red fox") == value  # promoted into memory
        stats = c.stats()
        assert stats["by_tier"]["memory"] == 1 and stats["by_tier"]["s3"] == 1
    assert upstream.calls == 1


def test_a_blob_too_large_for_redis_lives_in_s3_only(redis_url: str, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    upstream = Upstream(large)
    shared = {"redis_url": redis_url, "s3_bucket": bucket, "s3_endpoint_url": endpoint,
              "redis_max_blob_bytes": 1024}
    with Cache("big", **shared) as a:
        value = generator(a, upstream)(prompt="a large image")
        a.flush()
    assert len(value) == 8192
    digest = hashlib.sha256(value).hexdigest()
    client = raw_redis(redis_url)
    try:
        assert client.keys("imgcache:big:e:*"), "the entry itself is in Redis"
        assert not client.exists(f"imgcache:big:b:{{{digest}}}")
    finally:
        client.close()

    with Cache("big", **shared) as b:
        assert generator(b, upstream)(prompt="a large image") == value
        assert b.stats()["by_tier"]["s3"] == 1
        b.flush()
    client = raw_redis(redis_url)
    try:  # a hit does not promote it into Redis either
        assert not client.exists(f"imgcache:big:b:{{{digest}}}")
    finally:
        client.close()
    assert upstream.calls == 1


def test_redis_cluster_shares_entries(redis_cluster_url: str) -> None:
    upstream = Upstream()
    with Cache("cluster", redis_url=redis_cluster_url) as a:
        values = [generator(a, upstream)(prompt=f"prompt {i}") for i in range(6)]
    with Cache("cluster", redis_url=redis_cluster_url) as b:
        generate = generator(b, upstream)
        assert [generate(prompt=f"prompt {i}") for i in range(6)] == values
        assert b.stats()["by_tier"]["redis"] == 6
    assert upstream.calls == 6


def test_single_flight_across_cache_objects(any_redis_url: str) -> None:
    upstream = Upstream(sleep=0.3)
    caches = [Cache("flight", redis_url=any_redis_url) for _ in range(2)]
    try:
        generators = [generator(c, upstream) for c in caches]
        barrier = threading.Barrier(8)
        results: list[bytes] = []

        def worker(index: int) -> None:
            barrier.wait()
            results.append(generators[index % 2](prompt="one prompt"))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 8 and len(set(results)) == 1
        assert upstream.calls == 1
    finally:
        for cache in caches:
            cache.close()


# --- real processes --------------------------------------------------------------------------


def test_stats_aggregate_across_processes_through_redis(
    redis_url: str, worker_script: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    log = str(tmp_path / "upstream.log")
    common = {"mode": "calls", "namespace": "agg", "redis_url": redis_url, "log": log}
    processes.append(spawn(worker_script, prompts=["a fox"] * 3, **common))
    processes.append(spawn(worker_script, prompts=["a cat"] * 4, **common))
    own = [finish(p)["stats"] for p in processes]
    assert [(s["requests"], s["hits"], s["upstream_calls"]) for s in own] == [(3, 2, 1), (4, 3, 1)]

    with Cache("agg", redis_url=redis_url) as observer:
        stats = observer.stats(shared=True)
        assert (stats["requests"], stats["hits"], stats["misses"]) == (7, 5, 2)
        assert stats["upstream_calls"] == 2 and stats["stored"] == 2
        assert stats["by_tier"]["memory"] == 5
        assert observer.stats()["requests"] == 0  # its own figures stay its own
    with Cache("other", redis_url=redis_url) as other:
        assert other.stats(shared=True)["requests"] == 0  # counters are per namespace


def test_single_flight_across_two_processes_of_eight_threads(
    redis_url: str, worker_script: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    log = tmp_path / "upstream.log"
    go = tmp_path / "go"
    for i in range(2):
        processes.append(spawn(
            worker_script, mode="flight", namespace="sf", redis_url=redis_url, log=str(log),
            prompt="a crowded prompt", threads=8, sleep=0.3,
            ready=str(tmp_path / f"ready-{i}"), go=str(go),
        ))
    assert wait_until(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(2)), timeout=30.0)
    go.write_text("go")
    outputs = [finish(p) for p in processes]
    results = [r for out in outputs for r in out["results"]]
    assert len(results) == 16 and len(set(results)) == 1
    assert len(log.read_text().splitlines()) == 1, log.read_text()
    assert sum(out["stats"]["upstream_calls"] for out in outputs) == 1


def test_a_lock_holder_that_dies_blocks_others_only_until_the_lock_times_out(
    redis_url: str, worker_script: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    log = tmp_path / "upstream.log"
    started = tmp_path / "started"
    holder = spawn(worker_script, mode="calls", namespace="dying", redis_url=redis_url,
                   log=str(log), prompts=["a doomed prompt"], sleep=120, lock_timeout=1.0,
                   started=str(started))
    processes.append(holder)
    assert wait_until(started.exists, timeout=30.0), "the holder never reached its upstream call"

    upstream = Upstream()
    with Cache("dying", redis_url=redis_url, lock_timeout=1.0) as cache:
        generate = generator(cache, upstream)
        key = generate.cache_key(prompt="a doomed prompt")
        client = raw_redis(redis_url)
        try:
            lock_name = f"imgcache:dying:lock:{{{key}}}"
            assert client.exists(lock_name), "the holder should hold the flight lock"
            holder.kill()
            holder.communicate()
            assert generate(prompt="a doomed prompt") == expected("a doomed prompt")
            assert upstream.calls == 1
            assert not client.exists(lock_name)
        finally:
            client.close()
    assert len(log.read_text().splitlines()) == 1  # the dead holder's call, never finished
