"""Index snapshots (issue 17): a round written by one worker, mapped by the next; removals
under churn; trimming the feed; a snapshot that fails its digest; namespaces kept apart."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from _helpers import Upstream, bow_options, expected, generator

from imgcache import Cache
from imgcache.match.rounds import Rounds
from imgcache.store.base import FAILED
from imgcache.store.snapshots import PART_BYTES
from imgcache.testing.servers import wait_until

pytestmark = pytest.mark.slow

WORDS = ["red", "blue", "green", "cat", "dog", "owl", "castle", "tree", "river", "robot", "ship",
         "lantern", "violin", "teapot", "tower", "garden", "bridge", "dragon", "forest", "moon"]


def prompt(i: int) -> str:
    picked = [WORDS[hashlib.sha256(f"{i}:{k}".encode()).digest()[0] % len(WORDS)] for k in range(4)]
    return " ".join(picked) + f" number {i}"


def paraphrase(i: int) -> str:
    return "generate an image of " + prompt(i)


def rounds_of(cache: Cache) -> Rounds:
    matcher = cache._lookup.semantic  # white-box: the snapshot layer under test
    assert matcher is not None
    return matcher.rounds


def scope_of(cache: Cache) -> Any:
    scopes = rounds_of(cache).index.scopes()
    assert len(scopes) == 1
    return scopes[0][1]


def new_cache(tmp_path: Path, host: str = "a", namespace: str = "ns", redis_url: str | None = None,
              s3: tuple[str, str] | None = None, **options: Any) -> Cache:
    """A worker: its own memory, on host ``host`` (its own snapshot directory)."""
    semantic = bow_options(snapshot_rows=options.pop("snapshot_rows", 50),
                           snapshot_dir=str(tmp_path / f"host-{host}"), **options)
    if redis_url is None and s3 is None:
        return Cache(namespace, directory=tmp_path / "store", semantic=semantic)
    buckets = {} if s3 is None else {"s3_endpoint_url": s3[0], "s3_bucket": s3[1]}
    return Cache(namespace, redis_url=redis_url, semantic=semantic, **buckets)


def fill(cache: Cache, upstream: Upstream, numbers: range) -> None:
    generate = generator(cache, upstream)
    for i in numbers:
        generate(prompt=prompt(i))


def write_round(cache: Cache) -> None:
    rounds = rounds_of(cache)
    rounds.settle()
    rounds.read_feed()
    rounds.check()
    assert rounds.standing is not None


@pytest.fixture(params=["directory", "redis"])
def store(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "directory" else str(request.getfixturevalue("redis_url"))


def test_a_new_worker_stands_on_the_round_and_replays_only_the_tail(tmp_path: Path, store: str | None) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=store) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
        fill(writer, upstream, range(120, 130))  # after the round: the feed's tail
        assert scope_of(writer).own_rows == 10
    with new_cache(tmp_path, redis_url=store) as worker:
        generate = generator(worker, upstream)
        for i in (0, 60, 119, 125):
            before = upstream.calls
            assert generate(prompt=paraphrase(i)) == f"image for {prompt(i)} []".encode()
            assert upstream.calls == before
        scope = scope_of(worker)
        assert scope.snapshot is not None and scope.snapshot.rows == 120
        assert scope.own_rows == 10  # the tail (aliases are not indexed)
    directory = tmp_path / "host-a" / "ns" / "semantic"
    assert stat.S_IMODE(directory.stat().st_mode) == stat.S_IMODE(directory.parent.stat().st_mode) == 0o700
    for path in directory.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


@pytest.fixture(params=["redis", "cluster", "redis+s3"])
def fleet(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The shared tiers of a fleet: one Redis, a Redis Cluster, or a Redis with S3 behind it."""
    if request.param == "cluster":
        return {"redis_url": request.getfixturevalue("redis_cluster_url")}
    shared: dict[str, Any] = {"redis_url": request.getfixturevalue("redis_url")}
    if request.param == "redis+s3":
        shared["s3"] = request.getfixturevalue("s3_bucket")
    return shared


def test_another_host_fetches_the_round_through_the_fleet_tiers(tmp_path: Path, fleet: dict[str, Any]) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, "a", **fleet) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
    if "s3" in fleet:  # Redis lost every part (evicted, say): S3 has them too
        client = redis.Redis.from_url(fleet["redis_url"])
        for key in client.scan_iter("imgcache:ns:b:*"):
            client.delete(key)
    with new_cache(tmp_path, "b", **fleet) as worker:
        before = upstream.calls
        generator(worker, upstream)(prompt=paraphrase(7))
        assert upstream.calls == before
        assert scope_of(worker).snapshot is not None
    assert any((tmp_path / "host-b" / "ns" / "semantic").iterdir())


def test_removed_entries_are_never_proposed_again(tmp_path: Path, store: str | None) -> None:
    """Removed before the round (dead in it), after it (a removal record on the feed), and
    one stored again after its removal."""
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=store) as writer:
        fill(writer, upstream, range(120))
        generate = generator(writer, upstream)
        generate.invalidate(prompt=prompt(3))
        generate(prompt=paraphrase(3))  # proposes 3, finds it gone: removed everywhere; made anew
        write_round(writer)
        generate.invalidate(prompt=prompt(4))
        generate(prompt=paraphrase(4))  # after the round
        generate.invalidate(prompt=prompt(5))
        generate(prompt=paraphrase(5))  # removes 5; stores the paraphrase
        generate.invalidate(prompt=paraphrase(5))
        generate(prompt=prompt(5))  # removes the paraphrase; stores 5 again
        keys = {i: generate.cache_key(prompt=prompt(i)) for i in (3, 4, 5)}
    with new_cache(tmp_path, redis_url=store) as worker:
        calls = upstream.calls
        generator(worker, upstream)(prompt="please " + paraphrase(6))
        assert upstream.calls == calls
        scope = scope_of(worker)
        assert scope.snapshot is not None
        found = {c.key for i in (3, 4, 5) for c in scope.search(_vector(prompt(i)), 500, 0.0)}
        assert keys[3] not in found and keys[4] not in found
        assert keys[5] in found


def _vector(text: str) -> Any:
    from _helpers import bow_vectors

    from imgcache.match.semantic.verifier import content_text

    vector = bow_vectors([content_text(text)])[0]
    return vector / max(float((vector ** 2).sum()) ** 0.5, 1e-9)


def test_the_feed_is_trimmed_below_the_round_before(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    client = redis.Redis.from_url(redis_url)
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(100))
        write_round(writer)
        assert client.xlen("imgcache:ns:semantic") == 100  # no round before it: nothing trimmed
        fill(writer, upstream, range(100, 200))
        write_round(writer)  # trims below the first round: its own record is kept
        assert client.xlen("imgcache:ns:semantic") == 1 + 100
        fill(writer, upstream, range(200, 300))
        write_round(writer)
        assert client.xlen("imgcache:ns:semantic") == 1 + 100
    with new_cache(tmp_path, "b", redis_url=redis_url) as worker:
        generate = generator(worker, upstream)
        calls = upstream.calls
        for i in (0, 150, 299):
            generate(prompt=paraphrase(i))
        assert upstream.calls == calls


def test_a_snapshot_that_fails_its_digest_is_ignored_and_shared_again(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    client = redis.Redis.from_url(redis_url)
    with new_cache(tmp_path, "a", redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
        parts = [k for k in client.scan_iter("imgcache:ns:b:*") if client.strlen(k) <= PART_BYTES]
        damaged = 0
        for key in parts:  # every part damaged: whichever the fetch reads first fails
            value = client.get(key)
            if value and len(value) > 64:
                client.set(key, value[:-1] + bytes([value[-1] ^ 1]))
                damaged += 1
        assert damaged
        with new_cache(tmp_path, "b", redis_url=redis_url) as worker:
            before = upstream.calls
            generator(worker, upstream)(prompt=paraphrase(9))  # the feed still answers
            assert upstream.calls == before
            assert scope_of(worker).snapshot is None
        host_b = tmp_path / "host-b" / "ns"
        assert not host_b.exists() or not any(p.is_dir() and not p.name.startswith(".") for p in host_b.iterdir())
        assert rounds_of(writer).shelf.rounds().due  # reported bad
        rounds_of(writer).check()  # the writer shares it again
    with new_cache(tmp_path, "c", redis_url=redis_url) as worker:
        before = upstream.calls
        generator(worker, upstream)(prompt=paraphrase(10))
        assert upstream.calls == before
        assert scope_of(worker).snapshot is not None


def test_a_damaged_local_copy_is_not_mapped(tmp_path: Path) -> None:
    upstream = Upstream()
    with new_cache(tmp_path) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
    for path in (tmp_path / "host-a" / "ns" / "semantic").glob("*/keys.bin"):
        path.write_bytes(path.read_bytes()[:-5])
    with new_cache(tmp_path) as worker:
        before = upstream.calls
        generator(worker, upstream)(prompt=paraphrase(11))
        assert upstream.calls == before  # the whole feed answered
        assert scope_of(worker).snapshot is None


def test_no_round_crosses_namespaces(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
    with new_cache(tmp_path, namespace="other", redis_url=redis_url) as stranger:
        before = upstream.calls
        generator(stranger, upstream)(prompt=paraphrase(1))
        assert upstream.calls == before + 1
        assert rounds_of(stranger).standing is None


def test_small_caches_never_write_a_round(tmp_path: Path) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, snapshot_rows=50_000) as cache:
        fill(cache, upstream, range(60))
        rounds_of(cache).check()
        assert rounds_of(cache).standing is None
    assert not (tmp_path / "host-a" / "ns" / "semantic").exists() or not any(
        p.is_dir() for p in (tmp_path / "host-a" / "ns" / "semantic").iterdir())


def test_a_fresh_process_maps_the_round(tmp_path: Path, redis_url: str) -> None:
    """Another interpreter: the snapshot is mapped from this host's directory, not rebuilt."""
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_snapshots import new_cache, paraphrase, scope_of
        from pathlib import Path
        made = []
        with new_cache(Path({str(tmp_path)!r}), redis_url={redis_url!r}) as cache:
            generate = cache.cached(name="gen")(lambda *, prompt: made.append(prompt) or b"new")
            generate(prompt=paraphrase(42))
            scope = scope_of(cache)
            print(len(made), scope.snapshot.rows, scope.own_rows)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "120", "0"]


def test_parts_of_rounds_the_feed_no_longer_covers_are_deleted(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    client = redis.Redis.from_url(redis_url)
    made = []
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        for block in range(4):
            fill(writer, upstream, range(100 * block, 100 * block + 100))
            write_round(writer)
            made.append(next(iter(rounds_of(writer).standing.scopes.values())))
        shelved = rounds_of(writer).shelf.rounds()
    assert [next(iter(r.scopes.values())) for r in shelved.rounds] == made[:1:-1]  # the two newest
    def blob(digest: str) -> str:
        return "imgcache:ns:b:{" + hashlib.sha256(f"snapshot:semantic:{digest}".encode()).hexdigest() + "}"

    assert not client.exists(blob(made[0])) and not client.exists(blob(made[1]))
    assert client.exists(blob(made[2])) and client.exists(blob(made[3]))
    assert sorted(p.name for p in (tmp_path / "host-a" / "ns" / "semantic").iterdir() if not p.name.startswith(".")) == sorted(made[2:])


def test_a_worker_that_started_without_a_round_stands_on_the_next(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with (new_cache(tmp_path, redis_url=redis_url) as writer,
          new_cache(tmp_path, "b", redis_url=redis_url, snapshot_rows=10_000) as worker):
        fill(writer, upstream, range(120))
        generator(worker, upstream)(prompt=paraphrase(1))  # replays the whole feed: no round yet
        assert rounds_of(worker).standing is None and scope_of(worker).own_rows == 120
        write_round(writer)
        rounds_of(worker).check()
        assert rounds_of(worker).standing == rounds_of(writer).standing
        assert scope_of(worker).own_rows == 0 and len(scope_of(worker)) == 120


# --- found by a review ---------------------------------------------------------------------------


def keys_found(cache: Cache, texts: list[str]) -> set[str]:
    scope = scope_of(cache)
    return {c.key for text in texts for c in scope.search(_vector(text), 500, 0.0)}


def test_a_worker_never_steps_back_to_an_older_round(tmp_path: Path, redis_url: str) -> None:
    """The newest round reported bad leaves the older one usable: a worker standing on the
    newest keeps it (its feed is past the older one's)."""
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
        generate = generator(writer, upstream)
        generate.invalidate(prompt=prompt(3))
        generate(prompt=paraphrase(3))  # 3 is dead in the next round
        fill(writer, upstream, range(120, 200))
        write_round(writer)
        newest = rounds_of(writer).standing
        with new_cache(tmp_path, "b", redis_url=redis_url) as worker:
            generator(worker, upstream)(prompt="please " + paraphrase(150))
            assert rounds_of(worker).standing == newest
            fill(worker, upstream, range(200, 260))
            rounds_of(writer).shelf.report_bad(next(iter(newest.scopes.values())))
            with rounds_of(writer).shelf.lease(60) as held:  # the writer is busy: the worker only looks
                assert held
                rounds_of(worker).check()
            assert rounds_of(worker).standing == newest
            found = keys_found(worker, [prompt(3), prompt(150)])
            assert generate.cache_key(prompt=prompt(3)) not in found
            assert generate.cache_key(prompt=prompt(150)) in found


def test_a_worker_the_trim_overtook_starts_over_and_never_writes_its_gaps(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer, new_cache(tmp_path, "b", redis_url=redis_url) as idle:
        fill(writer, upstream, range(100))
        generator(idle, upstream)(prompt="please " + paraphrase(1))  # reads once, then idles
        generate = generator(writer, upstream)
        generate.invalidate(prompt=prompt(3))
        generate(prompt=paraphrase(3))  # a removal record...
        fill(writer, upstream, range(100, 200))
        write_round(writer)
        fill(writer, upstream, range(200, 300))
        write_round(writer)  # ...trimmed away before the idle worker read it
        rounds_of(idle).read_feed()
        rounds_of(idle).check()  # it starts over on the newest round instead of writing
        assert rounds_of(idle).standing == rounds_of(writer).standing
        found = keys_found(idle, [prompt(3), prompt(150)])
        assert generate.cache_key(prompt=prompt(3)) not in found
        assert generate.cache_key(prompt=prompt(150)) in found


def test_a_round_is_not_written_from_behind_the_newest(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer, new_cache(tmp_path, "b", redis_url=redis_url) as other:
        fill(writer, upstream, range(60))
        generator(other, upstream)(prompt="please " + paraphrase(1))
        fill(writer, upstream, range(60, 200))
        write_round(writer)
        rounds = rounds_of(other)
        store = other._lookup.store
        real = store.read_records
        store.read_records = lambda *args, **kwargs: FAILED  # its read fails: it knows only 60
        try:
            with rounds.shelf.lease(60) as held:
                assert held and rounds.write(rounds.shelf.rounds()) is None
        finally:
            store.read_records = real
        assert rounds.shelf.rounds().published[0] == rounds_of(writer).standing


def test_a_local_failure_is_not_reported_as_a_bad_snapshot(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
    (tmp_path / "host-b").write_bytes(b"")  # this host cannot make its snapshot directory
    with new_cache(tmp_path, "b", redis_url=redis_url) as broken:
        before = upstream.calls
        generator(broken, upstream)(prompt="please " + paraphrase(1))
        assert upstream.calls == before and rounds_of(broken).standing is None  # the feed served
    with new_cache(tmp_path, "c", redis_url=redis_url) as healthy:
        generator(healthy, upstream)(prompt="please " + paraphrase(2))
        assert rounds_of(healthy).standing is not None


def test_a_damaged_local_copy_is_fetched_again(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
    (graph,) = (tmp_path / "host-a" / "ns" / "semantic").glob("*/graph.usearch")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size, one byte off
    graph.write_bytes(bytes(data))
    with new_cache(tmp_path, redis_url=redis_url) as worker:
        before = upstream.calls
        generator(worker, upstream)(prompt="please " + paraphrase(5))
        assert upstream.calls == before and rounds_of(worker).standing is not None
    assert graph.read_bytes() != bytes(data)


def test_a_feed_record_that_is_not_utf8_does_not_stop_the_rounds(tmp_path: Path) -> None:
    """The cache refuses such a prompt; a record on the feed (another version, a damaged
    store) may still carry one."""
    import base64
    import json

    upstream = Upstream()
    with new_cache(tmp_path) as writer:
        fill(writer, upstream, range(120))
        scope_id = rounds_of(writer).index.scopes()[0][0]
        vector = base64.b64encode(_vector("a lantern").astype("<f2").tobytes()).decode()
        record = json.dumps({"s": scope_id, "k": "ab" * 32, "p": "a lantern \ud800", "v": vector})
        writer._lookup.semantic.feed.append([record.encode()])
        write_round(writer)
    with new_cache(tmp_path) as worker:
        assert generator(worker, upstream)(prompt="please " + paraphrase(5)) == expected(prompt(5))
        assert scope_of(worker).snapshot is not None


def test_every_host_forgets_rounds_no_longer_named(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        for block in range(5):
            fill(writer, upstream, range(100 * block, 100 * block + 100))
            write_round(writer)
            with new_cache(tmp_path, "b", redis_url=redis_url) as reader:
                generator(reader, upstream)(prompt=f"please {paraphrase(100 * block + 1)}")
                assert rounds_of(reader).standing == rounds_of(writer).standing
    kept = [p for p in (tmp_path / "host-b" / "ns" / "semantic").iterdir() if not p.name.startswith(".")]
    assert len(kept) <= 2


def test_a_writer_whose_snapshot_files_went_still_writes(tmp_path: Path) -> None:
    """Another process on the host removed the directory of the round this one stands on."""
    upstream = Upstream()
    with new_cache(tmp_path) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
        for path in (tmp_path / "host-a" / "ns" / "semantic").iterdir():
            if not path.name.startswith("."):
                for file in path.iterdir():
                    file.unlink()
                path.rmdir()
        fill(writer, upstream, range(120, 200))
        before = rounds_of(writer).standing
        write_round(writer)
        assert rounds_of(writer).standing != before and len(scope_of(writer)) == 200


@pytest.mark.parametrize("manifest", [
    {"files": {"../escape": {"size": 1, "parts": ["0" * 64]}}},
    {"files": {"graph.usearch": {"size": 200 << 20, "parts": ["0" * 64]}}},  # fewer parts than the size takes
    {"files": {"graph.usearch": {"size": 10, "parts": ["0" * 64, "0" * 64]}}},
    {"files": {f"f{i}": {"size": 0, "parts": []} for i in range(40)}},
    {"files": []},
])
def test_a_manifest_that_does_not_describe_a_snapshot_is_refused(tmp_path: Path, redis_url: str,
                                                                 manifest: dict[str, Any]) -> None:
    import json

    from imgcache.store.snapshots import Round

    with new_cache(tmp_path, redis_url=redis_url) as cache:
        generator(cache, Upstream())(prompt="a red lantern")
        shelf = rounds_of(cache).shelf
        raw = json.dumps(manifest).encode()
        digest = hashlib.sha256(raw).hexdigest()
        shelf._put_blob(raw)
        shelf.publish(Round("0-1", {"x" * 32: digest}, 1.0))
        assert shelf.local(digest) is None
        assert digest in shelf.rounds().bad or not shelf.rounds().rounds
    assert not list((tmp_path / "host-a" / "ns" / "semantic").glob("*/escape"))


def test_parts_are_not_dropped_while_a_kept_snapshot_is_unreadable(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    client = redis.Redis.from_url(redis_url)
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        fill(writer, upstream, range(120))
        write_round(writer)
        shelf = rounds_of(writer).shelf
        (old,) = rounds_of(writer).standing.scopes.values()
        blobs = set(client.scan_iter("imgcache:ns:b:*"))
        shelf.drop({old}, {"f" * 64})  # a kept snapshot whose manifest is nowhere
        assert set(client.scan_iter("imgcache:ns:b:*")) == blobs


def test_redis_killed_mid_round_costs_the_round_not_the_call(tmp_path: Path, own_redis: Any) -> None:
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=own_redis.url) as writer:
        fill(writer, upstream, range(120))
        rounds = rounds_of(writer)
        rounds.read_feed()
        own_redis.kill()
        try:
            rounds.check()  # logged, not raised
            assert rounds.standing is None
            generate = generator(writer, upstream)
            assert generate(prompt=prompt(7)) == expected(prompt(7))  # this process's memory answers
        finally:
            own_redis.restart()
        assert wait_until(lambda: writer.stats()["tiers"]["redis"] == "up"), "breaker never closed"
        fill(writer, upstream, range(120, 180))  # the restarted Redis is empty: a feed anew
        write_round(writer)
    with new_cache(tmp_path, "b", redis_url=own_redis.url) as worker:
        before = upstream.calls
        generator(worker, upstream)(prompt="please " + paraphrase(150))  # the restart emptied Redis: a newer entry
        assert upstream.calls == before and rounds_of(worker).standing is not None


def test_stats_show_the_newest_round(tmp_path: Path, redis_url: str) -> None:
    from rich.console import Console

    from imgcache.cli.stats import _stats_table

    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer:
        assert writer.stats(shared=True)["index_snapshots"] == {}
        fill(writer, upstream, range(120))
        write_round(writer)
        figures = writer.stats(shared=True)
    snapshot = figures["index_snapshots"]["semantic"]
    assert snapshot["scopes"] == 1 and snapshot["usable"] and snapshot["position"] == rounds_of(writer).standing.position
    console = Console(record=True, width=160)
    console.print(_stats_table(figures, "stats"))
    text = console.export_text()
    assert "semantic snapshot" in text and "in use" in text


# --- found by a second review ------------------------------------------------------------------


def test_a_round_is_adopted_only_once_the_feed_it_covers_is_read(tmp_path: Path, redis_url: str) -> None:
    """Else the worker would take its cursor for the round's position, and a removal between
    the two, trimmed by the next round, would be lost to it and to any round it writes."""
    upstream = Upstream()
    with new_cache(tmp_path, redis_url=redis_url) as writer, new_cache(tmp_path, "b", redis_url=redis_url) as worker:
        fill(writer, upstream, range(100))
        generator(worker, upstream)(prompt="please " + paraphrase(1))  # reads the feed once
        generate = generator(writer, upstream)
        removed = generate.cache_key(prompt=prompt(3))
        generate.invalidate(prompt=prompt(3))
        generate(prompt=paraphrase(3))  # a removal record after the worker's cursor
        write_round(writer)
        rounds_of(worker).check()  # stands on the round, having read up to it
        fill(writer, upstream, range(100, 200))
        write_round(writer)  # trims below the first round
        rounds_of(worker).read_feed()
        rounds_of(worker).check()
        assert removed not in keys_found(worker, [prompt(3)])
    with new_cache(tmp_path, "c", redis_url=redis_url) as fresh:
        generator(fresh, upstream)(prompt="kindly " + paraphrase(1))
        assert removed not in keys_found(fresh, [prompt(3)])


def test_a_worker_behind_the_newest_round_stands_on_it_instead_of_writing(tmp_path: Path, redis_url: str) -> None:
    upstream = Upstream()
    with (new_cache(tmp_path, redis_url=redis_url) as writer, new_cache(tmp_path, "b", redis_url=redis_url) as other,
          new_cache(tmp_path, "c", redis_url=redis_url) as third):
        fill(writer, upstream, range(100))
        write_round(writer)
        for n, worker in enumerate((other, third)):
            generator(worker, upstream)(prompt=f"kindly {n} " + paraphrase(1))
            rounds_of(worker).check()
        fill(writer, upstream, range(100, 200))
        for worker in (other, third):
            rounds_of(worker).read_feed()  # 100 rows of their own: a round would be due for them
        write_round(writer)
        rounds_of(other).check()
        published = rounds_of(other).shelf.rounds().published
        assert len({made.position for made in published}) == len(published) == 2
        assert rounds_of(other).standing == published[0] and scope_of(other).own_rows == 0
        rounds_of(third).check()  # it read everything: no start over, it stands on the newest
        assert rounds_of(third).standing == published[0] and scope_of(third).own_rows == 0


def test_a_snapshot_not_yet_published_is_not_removed_by_another_process(tmp_path: Path) -> None:
    upstream = Upstream()
    with new_cache(tmp_path) as cache:
        generator(cache, upstream)(prompt="a red lantern")
        shelf = rounds_of(cache).shelf
        unpublished = shelf.root / ("f" * 64)
        unpublished.mkdir(parents=True)
        shelf.forget_others(set(), newest=time.time() - 60)  # made after the newest round
        assert unpublished.is_dir()
        shelf.forget_others(set(), newest=time.time() + 60)  # made before it, and not named
        assert not unpublished.exists()


def test_expired_entries_are_not_proposed_and_leave_the_next_round(tmp_path: Path, redis_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A record carries when its entry expires at the latest (its TTL fully extended): past it
    the entry is not proposed, in the snapshot or among a process's own rows, and the next
    round carries it as dead; no lookup has to find it gone first."""
    import types

    from imgcache.match.semantic import index as index_module

    upstream = Upstream()
    with Cache("ns", redis_url=redis_url, ttl=60,
               semantic=bow_options(snapshot_rows=50, snapshot_dir=str(tmp_path / "host-a"))) as writer:
        fill(writer, upstream, range(100))
        write_round(writer)
        fill(writer, upstream, range(100, 120))  # own rows, on the feed after the round
        generate = generator(writer, upstream)
        keys = {i: generate.cache_key(prompt=prompt(i)) for i in (5, 110)}
        with new_cache(tmp_path, "b", redis_url=redis_url) as worker:
            generator(worker, upstream)(prompt="kindly " + paraphrase(1))
            assert set(keys.values()) <= keys_found(worker, [prompt(5), prompt(110)])
            later = time.time() + 30 * 86400
            monkeypatch.setattr(index_module, "time", types.SimpleNamespace(time=lambda: later, sleep=time.sleep))
            assert not set(keys.values()) & keys_found(worker, [prompt(5), prompt(110)])
            rows, _ = scope_of(writer).snapshot_rows()
            assert not rows.keys and rows.live_base is not None and not rows.live_base.any()
