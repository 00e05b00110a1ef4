"""Hostile and damaged data, against the real components (redis-server, directories, processes).

* A bad key (a value of another type, a counter that is not a number, a directory where a
  file should be) costs that key: a miss, repaired, counted as corrupt; the tier stays up.
* The memory tier is bounded by the bytes its entries really hold.
* Local files are private to their user unless the operator says otherwise.
* The invalidation map is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _helpers import Upstream, expected, generator

from imgcache import Cache, ConfigError
from imgcache._memo import deep_size
from imgcache.invalidation import MAX_REMEMBERED, Invalidations
from imgcache.prewarm.claims import claims_for
from imgcache.spend.limiter import Rates
from imgcache.store.base import MISSING, entry_key
from imgcache.store.prune import prune
from imgcache.store.rate import RedisBuckets
from imgcache.testing import RedisServer, free_port

NS = "hostile"


def tier(cache: Cache, name: str) -> Any:
    return next(t for t in cache.store.tiers if t.name == name)


def assert_healthy(cache: Cache, name: str) -> dict[str, Any]:
    """The tier is up and never failed; what the cache counted."""
    stats = cache.stats()
    assert stats["tiers"][name] == "up"
    assert stats.get("tier_errors", {}).get(name, 0) == 0
    return stats


# --- 1. one bad key never takes a tier down: Redis -------------------------------------------


@pytest.fixture
def redis_cache(any_redis_url: str) -> Iterator[Cache]:
    with Cache(NS, redis_url=any_redis_url, semantic=False, memory_bytes=0,
               wait_timeout=30) as cache:
        yield cache


@pytest.fixture
def client(any_redis_url: str, redis_cache: Cache) -> Iterator[Any]:
    """A redis-py client of the same server (or cluster) as ``redis_cache``."""
    cluster = tier(redis_cache, "redis").is_cluster
    with (redis.cluster.RedisCluster if cluster else redis.Redis).from_url(any_redis_url) as client:
        yield client


WRONG_TYPES: dict[str, Callable[[redis.Redis, str], Any]] = {
    "hash": lambda client, name: client.hset(name, "field", "value"),
    "list": lambda client, name: client.lpush(name, "value"),
    "set": lambda client, name: client.sadd(name, "value"),
    "stream": lambda client, name: client.xadd(name, {"field": "value"}),
}


@pytest.mark.parametrize("kind", sorted(WRONG_TYPES))
def test_a_wrong_typed_manifest_in_redis_costs_only_its_entry(
        redis_cache: Cache, client: redis.Redis, kind: str) -> None:
    upstream = Upstream()
    generate = generator(redis_cache, upstream)
    for prompt in ("good", "bad"):
        assert generate(prompt=prompt) == expected(prompt)
    name = tier(redis_cache, "redis").redis_key(entry_key(NS, generate.cache_key(prompt="bad")))
    client.delete(name)
    WRONG_TYPES[kind](client, name)

    served_by_redis = redis_cache.stats()["by_tier"]["redis"]
    assert generate(prompt="good") == expected("good")  # still a hit, from Redis
    assert redis_cache.stats()["by_tier"]["redis"] == served_by_redis + 1
    assert generate(prompt="bad") == expected("bad")  # a miss: called again
    assert upstream.prompts == ["good", "bad", "bad"]
    redis_cache.flush()
    assert client.type(name) == b"string"  # stored again over the garbage
    assert generate(prompt="bad") == expected("bad")  # and served
    assert upstream.calls == 3
    assert assert_healthy(redis_cache, "redis")["corrupt"] >= 1


def test_garbage_counter_fields_are_reset_and_never_open_the_breaker(
        redis_cache: Cache, client: redis.Redis) -> None:
    stats_key = f"imgcache:{NS}:stats"
    client.hset(stats_key, mapping={"hits": "garbage", "misses": "nan", "stored": "1e999",
                                    "hits.shadow": 5, "by_tier": 7})
    upstream = Upstream()
    generate = generator(redis_cache, upstream)
    for i in range(40):
        assert generate(prompt=f"p{i % 4}") == expected(f"p{i % 4}")
        redis_cache.flush_stats()
        assert_healthy(redis_cache, "redis")
    assert upstream.calls == 4  # never skipped Redis: every repeat was a hit

    shared = redis_cache.stats(shared=True)
    assert shared["tiers"]["redis"] == "up"
    assert (shared["hits"], shared["misses"], shared["stored"]) == (36, 4, 4)
    assert shared["by_tier"]["redis"] == 36
    assert float(client.hget(stats_key, "hits")) == 36  # reset to the delta, then added to
    assert shared["corrupt"] >= 3


def test_a_wrong_typed_counters_key_is_replaced(redis_cache: Cache, client: redis.Redis) -> None:
    stats_key = f"imgcache:{NS}:stats"
    client.lpush(stats_key, "not a hash")
    assert redis_cache.stats(shared=True)["hits"] == 0  # read: the garbage is removed
    client.delete(stats_key)
    client.sadd(stats_key, "not a hash")
    generate = generator(redis_cache, Upstream())
    generate(prompt="p")
    generate(prompt="p")
    shared = redis_cache.stats(shared=True)  # written: replaced by the counters
    assert (shared["hits"], shared["misses"]) == (1, 1)
    assert client.type(stats_key) == b"hash"
    assert assert_healthy(redis_cache, "redis")["corrupt"] >= 2


@pytest.mark.parametrize("lock_garbage", ["hash", "string without expiry"])
def test_wrong_typed_feeds_and_locks_never_open_the_breaker(
        any_redis_url: str, redis_cache: Cache, client: redis.Redis, lock_garbage: str) -> None:
    upstream = Upstream()
    generate = generator(redis_cache, upstream)
    prefix = f"imgcache:{NS}:"
    client.hset(f"{prefix}invalidated", "field", "value")  # a stream: the invalidation feed
    client.hset(f"{prefix}requests", "field", "value")  # a stream: the request log
    client.sadd(f"{prefix}semantic-recent", "value")  # a list: recent semantic hits
    lock = f"{prefix}lock:{{{generate.cache_key(prompt='locked')}}}"
    if lock_garbage == "hash":
        client.hset(lock, "field", "value")
    else:
        client.set(lock, "nobody's")  # a flight lock always expires

    started = time.monotonic()
    assert generate(prompt="locked") == expected("locked")  # the lock was taken, not waited for
    assert time.monotonic() - started < 5
    assert client.exists(lock) == 0  # and released
    generate.invalidate(prompt="locked")
    assert redis_cache.recent_semantic_hits() == []

    assert client.type(f"{prefix}invalidated") == b"stream"
    assert client.type(f"{prefix}requests") == b"stream"  # the miss was logged after the repair
    assert client.exists(f"{prefix}semantic-recent") == 0
    with Cache(NS, redis_url=any_redis_url, semantic=False) as other:  # another process
        other.invalidations.catch_up()
        assert len(other.invalidations) == 1
    assert generate(prompt="locked") == expected("locked")
    assert upstream.calls == 2  # invalidated, then asked again
    assert assert_healthy(redis_cache, "redis")["corrupt"] >= 4


def test_a_wrong_typed_rate_bucket_is_replaced(redis_cache: Cache, client: redis.Redis) -> None:
    buckets = RedisBuckets(tier(redis_cache, "redis"), NS, "prewarm")
    name = buckets._key("dall-e-3")
    client.lpush(name, "not a bucket")
    wait, _ = buckets.reserve("dall-e-3", Rates(requests=1.0, images=1.0), 1, 1)
    assert wait <= 0 and client.type(name) == b"hash"


@pytest.mark.slow  # a redis-server of its own
@pytest.mark.parametrize("failure", ["out of memory", "read-only replica"])
def test_a_redis_that_refuses_writes_still_opens_the_breaker(failure: str) -> None:
    with RedisServer() as server, redis.Redis.from_url(server.url) as client, \
            Cache(NS, redis_url=server.url, semantic=False, memory_bytes=0) as cache:
        upstream = Upstream()
        generate = generator(cache, upstream)
        generate(prompt="before")
        if failure == "out of memory":
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)
        else:
            client.replicaof("127.0.0.1", free_port())
        assert generate(prompt="after") == expected("after")
        assert cache.stats()["tiers"]["redis"] == "down"


# --- 1. one bad key never takes a tier down: the local directory -----------------------------


@pytest.fixture
def disk_cache(tmp_path: Path) -> Iterator[Cache]:
    with Cache(NS, directory=tmp_path / "cache", semantic=False, memory_bytes=0) as cache:
        yield cache


def _directory(path: Path, tmp_path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_bytes(b"x")


def _fifo(path: Path, tmp_path: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # a reader that opened it would wait for ever


def _symlink(path: Path, tmp_path: Path) -> None:
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")


def _file_as_shard(path: Path, tmp_path: Path) -> None:
    shutil.rmtree(path.parent)
    path.parent.write_bytes(b"a file where the shard directory should be")


OBSTACLES = {"directory": _directory, "fifo": _fifo, "symlink": _symlink,
             "file as shard": _file_as_shard}


@pytest.mark.parametrize("obstacle", sorted(OBSTACLES))
def test_something_in_place_of_an_entry_file_costs_only_its_entry(
        disk_cache: Cache, tmp_path: Path, obstacle: str) -> None:
    (tmp_path / "elsewhere").write_bytes(b"someone else's file")
    upstream = Upstream()
    generate = generator(disk_cache, upstream)
    for prompt in ("good", "bad"):
        assert generate(prompt=prompt) == expected(prompt)
    disk = tier(disk_cache, "disk")
    path = disk.path_for(entry_key(NS, generate.cache_key(prompt="bad")))
    assert disk.path_for(entry_key(NS, generate.cache_key(prompt="good"))).parent != path.parent
    OBSTACLES[obstacle](path, tmp_path)

    assert generate(prompt="good") == expected("good")  # still a hit, from the directory
    assert disk_cache.stats()["by_tier"]["disk"] == 1
    assert generate(prompt="bad") == expected("bad")  # a miss: called again
    assert upstream.prompts == ["good", "bad", "bad"]
    disk_cache.flush()
    assert stat.S_ISREG(path.lstat().st_mode)  # stored again in its place
    assert generate(prompt="bad") == expected("bad")
    assert upstream.calls == 3
    assert (tmp_path / "elsewhere").read_bytes() == b"someone else's file"  # never followed
    assert assert_healthy(disk_cache, "disk")["corrupt"] >= 1


def test_prune_removes_what_is_not_a_file(disk_cache: Cache, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"someone else's file")
    generate = generator(disk_cache, Upstream())
    prompts = [f"p{i}" for i in range(5)]
    for prompt in prompts:
        generate(prompt=prompt)
    disk = tier(disk_cache, "disk")
    paths = [disk.path_for(entry_key(NS, generate.cache_key(prompt=p))) for p in prompts]
    for path, obstacle in zip(paths, ("directory", "fifo", "symlink")):
        OBSTACLES[obstacle](path, tmp_path)
    report = prune(disk, grace=0)
    assert (report.invalid, report.entries) == (3, 2)
    assert not any(os.path.lexists(path) for path in paths[:3])
    assert (tmp_path / "elsewhere").read_bytes() == b"someone else's file"


@pytest.mark.parametrize("garbage", [b"garbage\x00", b'{"hits": "many", "misses": 0}', b"[1, 2]",
                                     b"{", "directory"])
def test_a_garbage_counters_file_is_reset_and_never_opens_the_breaker(
        disk_cache: Cache, garbage: bytes | str) -> None:
    stats_path = tier(disk_cache, "disk").root / NS / "stats.json"
    stats_path.parent.mkdir(parents=True)
    if garbage == "directory":
        stats_path.mkdir()
    else:
        stats_path.write_bytes(garbage)  # type: ignore[arg-type]
    upstream = Upstream()
    generate = generator(disk_cache, upstream)
    for i in range(20):
        assert generate(prompt=f"p{i % 4}") == expected(f"p{i % 4}")
        disk_cache.flush_stats()
        assert_healthy(disk_cache, "disk")
    assert upstream.calls == 4

    shared = disk_cache.stats(shared=True)
    assert (shared["hits"], shared["misses"]) == (16, 4)
    counters = json.loads(stats_path.read_bytes())
    assert all(type(value) is float for value in counters.values())
    assert shared["corrupt"] >= 1


# --- 2. the memory tier is bounded by the bytes its entries hold -----------------------------


def long_prompt(i: int) -> str:
    """A distinct 100,000-character prompt (already in normal form)."""
    words = "a quiet lake at dawn with mist over the water " * 2300
    return (f"prompt {i} {words}")[:100_000].strip()


@pytest.mark.slow  # seconds
def test_the_memory_tier_counts_what_its_entries_hold(tmp_path: Path) -> None:
    budget = 1 << 20
    with Cache(NS, directory=tmp_path, semantic=False, memory_bytes=budget) as cache:
        generate = cache.cached(name="gen")(lambda *, prompt: b"a small image")  # the prompt weighs
        keys = []
        for i in range(300):
            generate(prompt=long_prompt(i))
            keys.append(generate.cache_key(prompt=long_prompt(i)))
        memory = cache.store.memory
        assert memory is not None and memory.size_bytes <= budget
        held = [hit for key in keys if (hit := memory.get(entry_key(NS, key))) is not MISSING]
        assert 0 < len(held) < 12
        assert all(len(hit.manifest["request"]["prompt"]) > 99_000 for hit in held)
        assert sum(len(json.dumps(hit.manifest)) for hit in held) <= budget
        assert sum(deep_size(hit.manifest) + deep_size(hit.blobs) for hit in held) <= budget
        assert generate(prompt=long_prompt(299)) == b"a small image"
        assert cache.stats()["by_tier"]["memory"] == 1


RSS_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[2])
    from test_hostile_data import long_prompt
    from imgcache import Cache
    from imgcache.request import Request

    def rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def call(cache, i):
        request = Request.build("generation", "gen", long_prompt(i), {"size": "1024x1024"})
        return cache.fetch(request, lambda: b"image")

    with Cache("rss", directory=sys.argv[1], semantic=False, memory_bytes=1 << 20) as cache:
        for i in range(30):  # imports, pools, the first entries
            call(cache, i)
        before = rss()
        for i in range(30, 630):
            call(cache, i)
        print(rss() - before)
""")


@pytest.mark.slow  # a process, seconds
def test_memory_growth_of_a_process_stays_near_its_budget(tmp_path: Path) -> None:
    """600 entries of 100,000-character prompts (60 MB of prompts) through a 1 MiB memory tier
    (through ``fetch``: the decorator memoizes requests apart from the tier)."""
    argv = [sys.executable, "-c", RSS_SCRIPT, str(tmp_path), str(Path(__file__).parent)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=True)
    growth = int(run.stdout.split()[-1])
    assert growth < 20 << 20, f"RSS grew by {growth / (1 << 20):.0f} MiB for a 1 MiB memory tier"


# --- 3. local files are private to their user ------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def exercise(cache: Cache) -> Any:
    """Have the cache write every kind of local file: entries and blobs, counters, feeds,
    recent lists, lock files, the request log, URL files, prewarm claims and refusals (the
    claims are returned held: releasing one removes its file)."""
    generate = generator(cache, Upstream())
    generate(prompt="a fox")
    generate(prompt="a fox")
    generate.invalidate(prompt="a fox")
    cache.url_for(b"bytes served by URL", {"expires": None})
    tier(cache, "disk").push_recent(cache.namespace, "semantic-recent", b"{}", 5)
    claims = claims_for(cache, lease=30, refusal_ttl=60)
    assert claims.claim(generate.cache_key(prompt="a fox"))
    claims.refuse(generate.cache_key(prompt="a dog"), "refused")
    cache.flush()
    return claims


def modes(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(file -> mode, directory -> mode) of everything under root, root included."""
    files, directories = {}, {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        (directories if stat.S_ISDIR(info.st_mode) else files)[str(path.relative_to(root))] = \
            oct(stat.S_IMODE(info.st_mode))
    return files, directories


@pytest.mark.parametrize(("options", "file_mode", "dir_mode"),
                         [({}, "0o600", "0o700"), ({"file_mode": 0o640}, "0o640", "0o750")])
def test_local_files_get_the_configured_modes(tmp_path: Path, umask_022: None,
                                              options: dict[str, Any], file_mode: str,
                                              dir_mode: str) -> None:
    root = tmp_path / "cache" / "nested"
    with Cache(NS, directory=root, semantic=False, **options) as cache:
        claims = exercise(cache)
        files, directories = modes(tmp_path / "cache")
        claims.close()
    kinds = {Path(name).name.rpartition(".")[2] for name in files}
    assert {"json", "log", "recent", "lock"} <= kinds  # counters, feeds, recent lists, locks
    assert any("claims" in name for name in files) and any("refused" in name for name in files)
    assert any(name.endswith("requests.log") for name in files)
    assert {name: mode for name, mode in files.items() if mode != file_mode} == {}
    assert {name: mode for name, mode in directories.items() if mode != dir_mode} == {}


def test_a_root_left_readable_by_an_older_version_is_tightened(
        tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "old"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    with caplog.at_level(logging.WARNING, logger="imgcache"):
        Cache(NS, directory=root, semantic=False).close()
        Cache(NS, directory=root, semantic=False).close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert len([r for r in caplog.records if "readable by other users" in r.getMessage()]) == 1


def test_file_mode_comes_from_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for text, mode in (("640", 0o640), ("0640", 0o640), ("0o660", 0o660)):
        monkeypatch.setenv("IMGCACHE_FILE_MODE", text)
        with Cache.from_env(directory=tmp_path, semantic=False) as cache:
            assert cache.file_mode == tier(cache, "disk").file_mode == mode
    for text in ("rw-r-----", "999", "400", "0o1600"):
        monkeypatch.setenv("IMGCACHE_FILE_MODE", text)
        with pytest.raises(ConfigError):
            Cache.from_env(directory=tmp_path)
    with pytest.raises(ConfigError):
        Cache(directory=tmp_path, file_mode=0o044)


# --- 4. the invalidation map is bounded ------------------------------------------------------


@pytest.mark.slow  # seconds
def test_invalidations_older_than_the_longest_lifetime_are_forgotten(tmp_path: Path) -> None:
    with Cache(NS, directory=tmp_path, semantic=False, ttl=0.25) as cache:  # entries live <= 2 s
        assert cache.invalidations.max_age == pytest.approx(2.0)
        generate = generator(cache, Upstream())
        for i in range(20):
            generate(prompt=f"p{i}")
            generate.invalidate(prompt=f"p{i}")
        assert len(cache.invalidations) == 20
        time.sleep(2.1)
        cache.invalidations.catch_up()
        assert len(cache.invalidations) == 0 and not cache.invalidations.active()
        with Cache(NS, directory=tmp_path, semantic=False, ttl=0.25) as other:  # reads all the feed
            other.invalidations.catch_up()
            assert len(other.invalidations) == 0


def test_the_invalidation_map_never_exceeds_its_bound(tmp_path: Path) -> None:
    with Cache(NS, directory=tmp_path, semantic=False, memory_bytes=0) as cache:
        upstream = Upstream()
        generate = generator(cache, upstream)
        generate(prompt="kept")
        generate(prompt="other")
        hit = cache.store.get(NS, generate.cache_key(prompt="kept"))
        other = cache.store.get(NS, generate.cache_key(prompt="other"))
        assert hit is not None and other is not None
        invalidations = Invalidations(cache.store, NS, sync_interval=0.0, max_remembered=500)
        for i in range(2000):
            invalidations.record(f"{i:064x}")
            assert len(invalidations) <= 500
        invalidations.record(generate.cache_key(prompt="kept"))
        assert len(invalidations) <= 500
        assert invalidations.stale(hit.manifest)  # the newest is remembered
        assert not invalidations.stale(other.manifest)
        assert not invalidations.stale({"key": f"{0:064x}", "created": 0.0})  # the oldest forgotten
        assert invalidations.stale({"key": f"{1999:064x}", "created": 0.0})


@pytest.mark.slow  # seconds
def test_a_feed_longer_than_the_bound_is_remembered_up_to_the_bound(tmp_path: Path) -> None:
    now = time.time()
    feed = tmp_path / NS / "invalidated.log"
    feed.parent.mkdir(parents=True)
    count = MAX_REMEMBERED + 20_000
    feed.write_bytes(b"".join(b'{"k":"%064x","t":%.3f}\n' % (i, now) for i in range(count)))
    with Cache(NS, directory=tmp_path, semantic=False) as cache:
        tracemalloc.start()
        try:
            cache.invalidations.catch_up()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        remembered = len(cache.invalidations)
        assert MAX_REMEMBERED * 3 // 4 < remembered <= MAX_REMEMBERED
        assert held / remembered < 150  # a 64-character key string alone took 113 bytes
        assert cache.invalidations.stale({"key": f"{count - 1:064x}", "created": now - 1})
        assert not cache.invalidations.stale({"key": f"{0:064x}", "created": now - 1})
