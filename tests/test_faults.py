"""Faults never cost the caller's call, and nothing wrong is ever served.

Tiers die and come back (real servers killed and restarted), stored bytes are corrupted,
truncated, deleted or replaced by garbage and by pickles, and bad inputs come through the
decorator. Every call must still return the right result.
"""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from imgcache import Cache, InvalidRequest, UncachedResultWarning
from imgcache.testing import RedisServer, S3Server, free_port, wait_until

from _helpers import Upstream, expected, generator

if TYPE_CHECKING:
    from typing_extensions import Self

pytestmark = pytest.mark.slow  # servers killed and restarted; the tiers' caches load the model

BUCKET = "imgcache-faults"


def tier_state(cache: Cache, name: str) -> str:
    return cache.stats()["tiers"][name]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CallLoop:
    """Calls ``generate`` in a background thread until stopped, checking every result:
    even iterations repeat a warm prompt (a hit), odd ones ask a new one (a miss)."""

    def __init__(self, generate: Callable[..., bytes], warm: list[str],
                 before_call: Callable[[int], None] | None = None) -> None:
        self.generate = generate
        self.warm = warm
        self.before_call = before_call
        self.calls = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            prompt = self.warm[i % len(self.warm)] if i % 2 == 0 else f"new prompt {i}"
            if self.before_call is not None:
                self.before_call(i)
            try:
                value = self.generate(prompt=prompt)
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on below
                self.problems.append(f"{prompt!r} raised {exc!r}")
            else:
                if value != expected(prompt):
                    self.problems.append(f"{prompt!r} returned {value[:40]!r}")
            i += 1
            self.calls = i
            time.sleep(0.005)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def advance(self, calls: int = 20) -> bool:
        """Wait until the loop has made ``calls`` more calls."""
        target = self.calls + calls
        return wait_until(lambda: self.calls >= target or bool(self.problems))


# --- tiers that die and come back ------------------------------------------------------------


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A moto S3 server of this test's own, since the test kills it."""
    with S3Server() as server:
        server.create_bucket(BUCKET)
        yield server


def test_redis_killed_mid_run_costs_no_call_and_is_used_again_once_back(
    own_redis: RedisServer, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    upstream = Upstream()
    with Cache("kill-redis", redis_url=own_redis.url, s3_bucket=bucket,
               s3_endpoint_url=endpoint) as cache:
        generate = generator(cache, upstream)
        warm = [f"warm prompt {i}" for i in range(4)]
        for prompt in warm:
            generate(prompt=prompt)
        cache.flush()
        memory = cache.store.memory
        assert memory is not None

        def clear_memory_sometimes(i: int) -> None:
            if i % 10 == 0:  # the next warm prompts are then answered by a slower tier
                memory.clear()

        with CallLoop(generate, warm, clear_memory_sometimes) as loop:
            assert loop.advance()
            own_redis.kill()
            assert wait_until(lambda: tier_state(cache, "redis") == "down"), "breaker never opened"
            s3_hits = cache.stats()["by_tier"]["s3"]
            assert loop.advance(30)
            assert cache.stats()["by_tier"]["s3"] > s3_hits, "S3 should answer while Redis is down"
            own_redis.restart()
            assert wait_until(lambda: tier_state(cache, "redis") == "up"), "breaker never closed"
            assert loop.advance()
        assert not loop.problems, loop.problems[:5]
        assert cache.stats()["tier_errors"]["redis"] >= 1

        # Warm prompts never went upstream again, whichever tier answered them.
        repeated = [p for p, n in collections.Counter(upstream.prompts).items() if n > 1]
        assert not repeated

        # Redis is written again: a new entry lands there.
        key = generate.cache_key(prompt="after the restart")
        generate(prompt="after the restart")
        cache.flush()
        client = redis.Redis.from_url(own_redis.url, socket_timeout=2.0)
        try:
            assert client.exists(f"imgcache:kill-redis:e:{{{key}}}")
            blob = digest(expected("after the restart"))
            assert client.get(f"imgcache:kill-redis:b:{{{blob}}}") == expected("after the restart")
        finally:
            client.close()


def test_s3_killed_mid_run_costs_no_call_and_is_used_again_once_back(
    own_s3: S3Server, tmp_path: Path
) -> None:
    upstream = Upstream()
    with Cache("kill-s3", s3_bucket=BUCKET, s3_endpoint_url=own_s3.endpoint_url,
               directory=tmp_path) as cache:
        generate = generator(cache, upstream)
        warm = [f"warm prompt {i}" for i in range(4)]
        for prompt in warm:
            generate(prompt=prompt)
        cache.flush()
        memory = cache.store.memory
        assert memory is not None

        def clear_memory_sometimes(i: int) -> None:
            if i % 10 == 0:  # the next warm prompts are then answered by the disk tier
                memory.clear()

        with CallLoop(generate, warm, clear_memory_sometimes) as loop:
            assert loop.advance()
            own_s3.kill()
            assert wait_until(lambda: tier_state(cache, "s3") == "down"), "breaker never opened"
            assert loop.advance(30)
            own_s3.restart()  # moto comes back empty
            own_s3.create_bucket(BUCKET)
            assert wait_until(lambda: tier_state(cache, "s3") == "up"), "breaker never closed"
            assert loop.advance()
        assert not loop.problems, loop.problems[:5]
        assert cache.stats()["tier_errors"]["s3"] >= 1
        assert cache.stats()["by_tier"]["disk"] >= 1
        repeated = [p for p, n in collections.Counter(upstream.prompts).items() if n > 1]
        assert not repeated

        key = generate.cache_key(prompt="after the restart")
        generate(prompt="after the restart")
        cache.flush()
        s3 = own_s3.client()
        entry = s3.get_object(Bucket=BUCKET, Key=f"imgcache/kill-s3/e/{key}")["Body"].read()
        assert json.loads(entry)["key"] == key
        blob = digest(expected("after the restart"))
        body = s3.get_object(Bucket=BUCKET, Key=f"imgcache/kill-s3/b/{blob}")["Body"].read()
        assert body == expected("after the restart")


def test_redis_that_never_answers_costs_no_call(tmp_path: Path) -> None:
    upstream = Upstream()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with Cache("no-redis", redis_url=nowhere, directory=tmp_path) as cache:
        generate = generator(cache, upstream)
        for _ in range(3):
            for i in range(4):
                assert generate(prompt=f"prompt {i}") == expected(f"prompt {i}")
        assert upstream.calls == 4
        stats = cache.stats()
        assert stats["tier_errors"]["redis"] >= 1
        assert stats["tiers"]["redis"] == "down"
        assert stats["hits"] == 8
    with Cache("no-redis", redis_url=nowhere, directory=tmp_path, memory_bytes=0) as again:
        assert generator(again, upstream)(prompt="prompt 0") == expected("prompt 0")
        assert again.stats()["by_tier"]["disk"] == 1
    assert upstream.calls == 4


# --- corrupt, truncated, missing and garbage data ---------------------------------------------


class Tiers:
    """Raw access to what the tiers of namespace ``ns`` hold, bypassing imgcache."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.directory = tmp_path / "cache"
        self._redis: Any = None
        self._s3: Any = None

    @property
    def redis_url(self) -> str:
        return str(self.request.getfixturevalue("redis_url"))

    @property
    def s3_bucket(self) -> tuple[str, str]:
        return self.request.getfixturevalue("s3_bucket")  # type: ignore[no-any-return]

    def redis(self) -> Any:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2.0)
        return self._redis

    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.request.getfixturevalue("s3_server").client()
        return self._s3

    def cache(self, ns: str, kinds: tuple[str, ...]) -> Cache:
        options: dict[str, Any] = {"memory_bytes": 0}
        if "disk" in kinds:
            options["directory"] = self.directory
        if "redis" in kinds:
            options["redis_url"] = self.redis_url
        if "s3" in kinds:
            endpoint, bucket = self.s3_bucket
            options.update(s3_bucket=bucket, s3_endpoint_url=endpoint)
        return Cache(ns, **options)

    def _name(self, kind: str, ns: str, what: str, ident: str) -> Any:
        if kind == "disk":
            return self.directory / ns / what / ident[:2] / ident
        if kind == "redis":
            return f"imgcache:{ns}:{what}:{{{ident}}}"
        return f"imgcache/{ns}/{what}/{ident}"

    def read(self, kind: str, ns: str, what: str, ident: str) -> bytes | None:
        name = self._name(kind, ns, what, ident)
        if kind == "disk":
            return name.read_bytes() if name.exists() else None
        if kind == "redis":
            return self.redis().get(name)  # type: ignore[no-any-return]
        try:
            return self.s3().get_object(Bucket=self.s3_bucket[1], Key=name)["Body"].read()  # type: ignore[no-any-return]
        except self.s3().exceptions.NoSuchKey:
            return None

    def write(self, kind: str, ns: str, what: str, ident: str, data: bytes) -> None:
        name = self._name(kind, ns, what, ident)
        if kind == "disk":
            name.parent.mkdir(parents=True, exist_ok=True)
            name.write_bytes(data)
        elif kind == "redis":
            self.redis().set(name, data)
        else:
            self.s3().put_object(Bucket=self.s3_bucket[1], Key=name, Body=data)

    def delete(self, kind: str, ns: str, what: str, ident: str) -> None:
        name = self._name(kind, ns, what, ident)
        if kind == "disk":
            name.unlink()
        elif kind == "redis":
            self.redis().delete(name)
        else:
            self.s3().delete_object(Bucket=self.s3_bucket[1], Key=name)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


@pytest.fixture
def tiers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tiers]:
    raw = Tiers(request, tmp_path)
    yield raw
    raw.close()


# (the tier whose blob is corrupted, the tiers of the cache): a later tier holds a good copy,
# except for S3 alone, where the right result must come from upstream.
CORRUPTIONS = {
    "disk": ("disk", ("disk", "redis")),
    "redis": ("redis", ("redis", "s3")),
    "s3": ("s3", ("s3",)),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_blob_is_never_served_and_is_repaired(tiers: Tiers, case: str) -> None:
    bad_tier, kinds = CORRUPTIONS[case]
    upstream = Upstream()
    with tiers.cache("corrupt", kinds) as cache:
        generate = generator(cache, upstream)
        value = generate(prompt="a precious image")
        cache.flush()
        blob = digest(value)
        assert tiers.read(bad_tier, "corrupt", "b", blob) == value
        tiers.write(bad_tier, "corrupt", "b", blob, b"X" * len(value))  # same length, wrong bytes

        assert generate(prompt="a precious image") == value
        assert cache.stats()["corrupt"] >= 1
        assert upstream.calls == (2 if kinds == ("s3",) else 1)
        cache.flush()
        assert tiers.read(bad_tier, "corrupt", "b", blob) == value, "the bad copy was not repaired"
        assert generate(prompt="a precious image") == value


def test_a_corrupt_blob_in_every_tier_is_never_served(tiers: Tiers) -> None:
    upstream = Upstream()
    with tiers.cache("corrupt-all", ("disk", "redis", "s3")) as cache:
        generate = generator(cache, upstream)
        value = generate(prompt="an image")
        cache.flush()
        blob = digest(value)
        for kind in ("disk", "redis", "s3"):
            tiers.write(kind, "corrupt-all", "b", blob, b"wrong bytes")
        assert generate(prompt="an image") == value
        assert upstream.calls == 2
        assert cache.stats()["corrupt"] >= 3
        cache.flush()
        for kind in ("disk", "redis", "s3"):
            assert tiers.read(kind, "corrupt-all", "b", blob) == value


GARBAGE: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "not-json": lambda good: b"{\"v\": 1, \"key\": \x00\xff not json",
    "not-utf8": lambda good: b"\xff\xfe\x00garbage",
    "json-list": lambda good: b"[1, 2, 3]",
    "json-string": lambda good: b'"a manifest"',
    "missing-result": lambda good: json.dumps({k: v for k, v in good.items() if k != "result"}).encode(),
    "result-not-a-dict": lambda good: json.dumps({**good, "result": "body"}).encode(),
    "blobs-not-a-list": lambda good: json.dumps({**good, "result": {**good["result"], "blobs": "x"}}).encode(),
    "unknown-result-type": lambda good: json.dumps({**good, "result": {**good["result"], "type": "pickle"}}).encode(),
    "expires-not-a-number": lambda good: json.dumps({**good, "expires": "never"}).encode(),
    "future-version": lambda good: json.dumps({**good, "v": 999}).encode(),
    "body-not-a-digest": lambda good: json.dumps({**good, "result": {**good["result"], "body": "../../etc/passwd"}}).encode(),
    "blob-not-a-digest": lambda good: json.dumps({**good, "result": {**good["result"], "blobs": [123]}}).encode(),
    "max-expires-not-a-number": lambda good: json.dumps({**good, "max_expires": "later"}).encode(),
    "ttl-not-a-number": lambda good: json.dumps({**good, "ttl": "long", "expires": 4e9, "max_expires": 5e9}).encode(),
    "cost-not-a-number": lambda good: json.dumps({**good, "cost_usd": "free"}).encode(),
    "elapsed-not-a-number": lambda good: json.dumps({**good, "elapsed": [1]}).encode(),
    "unknown-match": lambda good: json.dumps({**good, "match": "psychic"}).encode(),
}


@pytest.mark.parametrize("kind", ["disk", "redis", "s3"])
@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_a_garbage_manifest_is_a_miss(tiers: Tiers, kind: str, garbage: str) -> None:
    ns = "garbage"
    upstream = Upstream()
    with tiers.cache(ns, (kind,)) as cache:
        generate = generator(cache, upstream)
        key = generate.cache_key(prompt="the target")
        generate(prompt="the target")
        cache.flush()
        good = json.loads(tiers.read(kind, ns, "e", key) or b"null")
        assert good["key"] == key
        tiers.write(kind, ns, "e", key, GARBAGE[garbage](good))

        assert generate(prompt="the target") == expected("the target")
        assert upstream.calls == 2
        assert cache.stats()["corrupt"] >= 1


@pytest.mark.parametrize("kind", ["disk", "redis", "s3"])
def test_another_requests_manifest_under_a_key_is_a_miss(tiers: Tiers, kind: str) -> None:
    ns = "swapped"
    upstream = Upstream()
    with tiers.cache(ns, (kind,)) as cache:
        generate = generator(cache, upstream)
        other_key = generate.cache_key(prompt="another request")
        target_key = generate.cache_key(prompt="the target")
        generate(prompt="another request")
        cache.flush()
        other_manifest = tiers.read(kind, ns, "e", other_key)
        assert other_manifest is not None
        tiers.write(kind, ns, "e", target_key, other_manifest)  # a valid manifest, wrong key

        assert generate(prompt="the target") == expected("the target")
        assert upstream.prompts == ["another request", "the target"]
        assert cache.stats()["corrupt"] >= 1
        assert generate(prompt="another request") == expected("another request")


@pytest.mark.parametrize("kind", ["disk", "redis", "s3"])
def test_a_truncated_blob_is_a_miss(tiers: Tiers, kind: str) -> None:
    upstream = Upstream()
    with tiers.cache("truncated", (kind,)) as cache:
        generate = generator(cache, upstream)
        value = generate(prompt="an image")
        cache.flush()
        tiers.write(kind, "truncated", "b", digest(value), value[: len(value) // 3])
        assert generate(prompt="an image") == value
        assert upstream.calls == 2
        assert cache.stats()["corrupt"] >= 1
        cache.flush()
        assert tiers.read(kind, "truncated", "b", digest(value)) == value


def test_a_blob_missing_from_every_tier_is_a_miss(tiers: Tiers) -> None:
    upstream = Upstream()
    kinds = ("disk", "redis", "s3")
    with tiers.cache("missing", kinds) as cache:
        generate = generator(cache, upstream)
        value = generate(prompt="an image")
        cache.flush()
        for kind in kinds:
            tiers.delete(kind, "missing", "b", digest(value))
        assert generate(prompt="an image") == value
        assert upstream.calls == 2
        cache.flush()
        assert all(tiers.read(kind, "missing", "b", digest(value)) == value for kind in kinds)


def test_a_blob_missing_from_one_tier_is_served_from_another(tiers: Tiers) -> None:
    upstream = Upstream()
    with tiers.cache("half", ("disk", "redis")) as cache:
        generate = generator(cache, upstream)
        value = generate(prompt="an image")
        cache.flush()
        tiers.delete("disk", "half", "b", digest(value))
        assert generate(prompt="an image") == value
        assert upstream.calls == 1
        cache.flush()
        assert tiers.read("disk", "half", "b", digest(value)) == value  # and put back


# --- nothing read back is unpickled -----------------------------------------------------------


class Booby:
    """Unpickling this writes ``path``: proof that someone unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "unpickled!"))


def test_nothing_read_back_is_unpickled(tiers: Tiers, tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Booby(control)))  # the payload works when unpickled...
    assert control.exists()

    marker = tmp_path / "marker"
    payload = pickle.dumps(Booby(marker))
    upstream = Upstream()
    ns = "pickles"
    with tiers.cache(ns, ("redis",)) as cache:
        generate = generator(cache, upstream)
        # A pickle where an entry is expected.
        key = generate.cache_key(prompt="entry")
        tiers.write("redis", ns, "e", key, payload)
        assert generate(prompt="entry") == expected("entry")
        assert cache.stats()["corrupt"] >= 1

        # A pickle where a blob of a valid entry is expected.
        value = generate(prompt="blob")
        cache.flush()
        tiers.write("redis", ns, "b", digest(value), payload)
        assert generate(prompt="blob") == value
        assert cache.stats()["corrupt"] >= 2
        assert upstream.calls == 3
    assert not marker.exists(), "a payload read back from Redis was unpickled"


# --- bad input through the decorator ----------------------------------------------------------


@pytest.fixture
def shared_cache(tmp_path: Path, redis_url: str) -> Iterator[Cache]:
    with Cache("bad", redis_url=redis_url, directory=tmp_path / "cache") as cache:
        yield cache


def nothing_stored(cache: Cache, tmp_path: Path, redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        keys = [k for k in client.keys("imgcache:bad:*") if not k.endswith(b":stats")]
    finally:
        client.close()
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.parent.name != "bad"]
    return cache.stats()["stored"] == 0 and not keys and not files


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": 12}, "prompt"),
        ({"prompt": b"bytes"}, "prompt"),
        ({"prompt": ["a", "list"]}, "prompt"),
        ({"prompt": "p", "extra": object()}, "object"),
        ({"prompt": "p", "extra": {1, 2}}, "set"),
        ({"prompt": "p", "extra": {"nested": {3}}}, "set"),
        ({"prompt": "p", "extra": {1: "non-string key"}}, "key"),
        ({"prompt": "p", "extra": float("nan")}, "nan"),
    ],
    ids=["missing", "none", "int", "bytes", "list", "object", "set", "nested-set", "int-key", "nan"],
)
def test_bad_requests_raise_typed_errors_and_store_nothing(
    shared_cache: Cache, tmp_path: Path, redis_url: str, kwargs: dict[str, Any], match: str
) -> None:
    upstream = Upstream()

    @shared_cache.cached(name="gen")
    def generate(*, prompt: Any = None, extra: Any = None) -> bytes:
        return upstream(str(prompt))

    with pytest.raises(InvalidRequest, match=f"(?i){match}") as caught:
        generate(**kwargs)
    assert isinstance(caught.value, TypeError)
    assert upstream.calls == 0
    assert nothing_stored(shared_cache, tmp_path, redis_url)


def test_a_missing_required_prompt_is_a_typed_error(
    shared_cache: Cache, tmp_path: Path, redis_url: str
) -> None:
    upstream = Upstream()

    @shared_cache.cached(name="gen")
    def generate(*, prompt: str, size: str = "1024x1024") -> bytes:
        return upstream(prompt)

    with pytest.raises(InvalidRequest, match="prompt"):
        generate(size="512x512")
    with pytest.raises(InvalidRequest):
        generate("positional", "too", "many")
    assert upstream.calls == 0
    assert nothing_stored(shared_cache, tmp_path, redis_url)


@pytest.mark.parametrize(
    "result",
    [object(), (1, 2), {1, 2}, {"k": object()}, float("nan"), {"$blob": "x"}, bytearray(b"ab"),
     "\ud800"],
    ids=["object", "tuple", "set", "nested-object", "nan", "reserved-key", "bytearray",
         "lone-surrogate"],
)
def test_an_unstorable_result_is_returned_uncached_with_a_warning(
    shared_cache: Cache, tmp_path: Path, redis_url: str, result: Any
) -> None:
    upstream = Upstream()

    @shared_cache.cached(name="gen")
    def generate(*, prompt: str) -> Any:
        upstream(prompt)
        return result

    for _ in range(2):
        with pytest.warns(UncachedResultWarning):
            assert generate(prompt="p") is result
    assert upstream.calls == 2
    assert shared_cache.stats()["uncacheable"] == 2
    shared_cache.flush()
    assert nothing_stored(shared_cache, tmp_path, redis_url)
