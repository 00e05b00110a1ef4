"""Latency of cache hits per tier, and what a miss adds to the upstream call.

    python benchmarks/bench_cache.py [--quick] [--json] [--strict] [--profile] [--only NAME ...]

Each benchmark times imgcache (the candidate) against the same work done without it (the
baseline), side by side in alternating rounds of one run, and prints both, the ratio and the
target from the issue. Servers are private: a redis-server and a moto S3 server on free
loopback ports (imgcache.testing launchers) and FakeOpenAI in-process.

Exit status is 0 whatever the figures (a target missed is reported as FAIL) unless a
benchmark could not run; with ``--strict`` a missed target also exits 1.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import importlib.metadata
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Figures,
    Result,
    compare,
    emit_json,
    exit_code,
    fmt_us,
    measure,
    parser,
    print_facts,
    report,
    report_stream,
    run_guarded,
    summary,
    table,
)

# Dummy credentials before boto3 is imported: the S3 benchmark talks to a local moto server
# only, and must never pick up a developer's real AWS identity.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1")
for _name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)

import imgcache
from imgcache import Cache, Request

MiB = 1 << 20
SMALL = 512
MEMORY_HIT_P50_US = 25.0
MEMORY_HIT_MAX_RATIO = 10.0
REDIS_MAX_RATIO = 2.0
S3_MAX_RATIO = 1.5

NAMES = ("memory_hit_decorator", "redis_hit_1mib", "s3_hit_1mib", "s3_only_hit_1mib", "openai_miss_overhead",
         "decorator_miss_1mib")


@dataclass(frozen=True)
class Loops:
    rounds: int
    per_round: int
    warmup: int


# (quick, default) loop sizes per benchmark: quick keeps the whole file under ~20 s.
LOOPS = {
    "memory_hit_decorator": (Loops(10, 400, 200), Loops(40, 2500, 1000)),
    "redis_hit_1mib": (Loops(6, 15, 5), Loops(20, 50, 20)),
    "s3_hit_1mib": (Loops(4, 6, 3), Loops(16, 20, 10)),
    "s3_only_hit_1mib": (Loops(4, 6, 3), Loops(16, 20, 10)),
    "openai_miss_overhead": (Loops(4, 5, 3), Loops(16, 12, 5)),
    "decorator_miss_1mib": (Loops(6, 8, 4), Loops(20, 25, 10)),
}


class Bench:
    def __init__(self, quick: bool, out: TextIO) -> None:
        self.quick = quick
        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix="imgcache-bench-"))
        self._stack = contextlib.ExitStack()
        self._redis: Any = None
        self._s3: Any = None

    def loops(self, name: str) -> Loops:
        return LOOPS[name][0 if self.quick else 1]

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def directory(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp))

    def cache(self, **options: Any) -> Cache:
        cache = Cache(namespace="bench", **options)
        self._stack.callback(cache.close)
        return cache

    @property
    def redis_server(self) -> Any:
        if self._redis is None:
            from imgcache.testing import RedisServer

            self._redis = self._stack.enter_context(RedisServer())
        return self._redis

    @property
    def s3_server(self) -> Any:
        if self._s3 is None:
            from imgcache.testing import S3Server

            self._s3 = self._stack.enter_context(S3Server())
        return self._s3


def check_tier(cache: Cache, tier: str, hits_expected: int) -> None:
    """The candidate must really have been served by ``tier``, or its figures mean nothing."""
    stats = cache.stats()
    got = stats["by_tier"].get(tier, 0)
    if got < hits_expected:
        raise RuntimeError(
            f"expected at least {hits_expected} hits from the {tier} tier, stats say {stats['by_tier']}"
        )


# -- 1. memory hit through the decorator -------------------------------------------------------


@dataclass
class MemoryHit:
    cache: Cache
    gen: Any
    args: dict[str, str]
    hit: Callable[[], Any]
    bare: Callable[[], Any]


def memory_hit_setup(bench: Bench) -> MemoryHit:
    cache = bench.cache(directory=bench.directory("memory"))
    payload = os.urandom(64 * 1024)

    @cache.cached()
    def gen(*, prompt: str, model: str, size: str) -> bytes:
        return payload

    args = {"prompt": "a red fox in the snow", "model": "dall-e-3", "size": "1024x1024"}
    assert gen(**args) == payload  # the miss that fills the tiers
    cache.flush()

    table = {hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest(): payload}

    def bare() -> Any:
        body = json.dumps({"prompt": args["prompt"], "model": args["model"], "size": args["size"]},
                          sort_keys=True)
        return table[hashlib.sha256(body.encode()).hexdigest()]

    def hit() -> Any:
        return gen(prompt="a red fox in the snow", model="dall-e-3", size="1024x1024")

    assert hit() == payload and bare() is payload
    return MemoryHit(cache, gen, args, hit, bare)


def bench_memory_hit(bench: Bench) -> Result:
    result = Result("memory_hit_decorator", "@cache.cached() hit from a warm memory tier (64 KiB bytes)",
                    "gen(...) hit through @cache.cached()",
                    "canonical json.dumps + sha256 + dict lookup")
    setup = memory_hit_setup(bench)
    cache = setup.cache
    loops = bench.loops(result.name)
    result.candidate, result.baseline = compare(setup.hit, setup.bare, rounds=loops.rounds,
                                                per_round=loops.per_round, warmup=loops.warmup)
    check_tier(cache, "memory", loops.rounds * loops.per_round)
    # The decorator memoizes requests of scalar keyword calls; a prompt spelled anew pays the
    # whole request build (normalize, canonical JSON, sha256). Measured in the same way:
    operation = f"{setup.gen.__module__}.{setup.gen.__qualname__}"
    params = {k: v for k, v in setup.args.items() if k != "prompt"}
    variant = "  A Red Fox in the SNOW. "

    def unmemoized() -> Any:
        return cache.fetch(Request.build("generation", operation, variant, params), lambda: None)

    assert unmemoized() == setup.hit()
    (full,) = measure([unmemoized], rounds=loops.rounds, per_round=loops.per_round, warmup=loops.warmup)
    result.notes.append(f"a new spelling of the prompt (no memo: request built, normalized, hashed): "
                        f"p50 {full.p50:.2f} µs = {full.p50 / result.baseline.p50:.2f}x baseline")
    ratio = result.ratio
    assert ratio is not None
    result.target = f"p50 <= {MEMORY_HIT_P50_US:g} µs and <= {MEMORY_HIT_MAX_RATIO:g}x baseline"
    result.passed = result.candidate.p50 <= MEMORY_HIT_P50_US and ratio <= MEMORY_HIT_MAX_RATIO
    result.notes.append(f"absolute part: p50 {result.candidate.p50:.2f} µs vs {MEMORY_HIT_P50_US:g} µs "
                        f"-> {'ok' if result.candidate.p50 <= MEMORY_HIT_P50_US else 'missed'}; "
                        f"ratio part: {ratio:.2f}x vs {MEMORY_HIT_MAX_RATIO:g}x -> "
                        f"{'ok' if ratio <= MEMORY_HIT_MAX_RATIO else 'missed'}")
    return result


# -- 2. Redis-tier hit of 1 MiB -----------------------------------------------------------------


def bench_redis_hit(bench: Bench) -> Result:
    import redis

    result = Result("redis_hit_1mib", "Redis-tier hit of a 1 MiB result (memory_bytes=0)",
                    "decorator hit served by Redis", "redis-py GET of the same 1 MiB")
    server = bench.redis_server
    cache = bench.cache(redis_url=server.url, memory_bytes=0)
    tiers = cache.store.tier_names
    if tiers != ["redis"]:
        raise RuntimeError(f"expected only the redis tier, got {tiers}")
    payload = os.urandom(MiB)

    @cache.cached()
    def gen(*, prompt: str, model: str, size: str) -> bytes:
        return payload

    args = {"prompt": "a lighthouse at dusk", "model": "dall-e-3", "size": "1024x1024"}
    gen(**args)
    cache.flush()

    raw = redis.Redis.from_url(server.url)
    bench._stack.callback(raw.close)
    raw.set("bench:raw-blob", payload)

    def hit() -> Any:
        return gen(**args)

    def baseline() -> Any:
        return raw.get("bench:raw-blob")

    raw.set("bench:raw-small", os.urandom(SMALL))

    def small_get() -> Any:
        return raw.get("bench:raw-small")

    assert hit() == payload and baseline() == payload
    loops = bench.loops(result.name)
    result.candidate, result.baseline, small, digest = measure(
        [hit, baseline, small_get, lambda: hashlib.sha256(payload).hexdigest()],
        rounds=loops.rounds, per_round=loops.per_round, warmup=loops.warmup)
    check_tier(cache, "redis", loops.rounds * loops.per_round)
    _floor(result, small, digest, "GET")
    ratio = result.ratio
    assert ratio is not None
    result.target = f"<= {REDIS_MAX_RATIO:g}x baseline"
    result.passed = ratio <= REDIS_MAX_RATIO
    result.notes.append("a hit is a manifest GET, then an MGET of the blob, then a sha256 of 1 MiB; "
                        "the baseline is one GET")
    return result


def _floor(result: Result, small: Figures, digest: Figures, op: str) -> None:
    """Reference figures measured in the same rounds: what two round trips and a digest cost."""
    assert result.baseline is not None
    floor = result.baseline.p50 + small.p50 + digest.p50
    result.extra["reference"] = {"small_get": small.as_dict(), "sha256_1mib": digest.as_dict(),
                                 "floor_ratio": round(floor / result.baseline.p50, 4)}
    result.notes.append(
        f"reference, same rounds: raw {op} of a {SMALL}-byte value (a manifest's size) p50 "
        f"{fmt_us(small.p50)} µs; sha256 of 1 MiB p50 {fmt_us(digest.p50)} µs; baseline + both = "
        f"{fmt_us(floor)} µs = {floor / result.baseline.p50:.2f}x, the floor for a hit made of a "
        "manifest read, a blob read and a digest check")


# -- 3. S3-tier hit of 1 MiB --------------------------------------------------------------------


def bench_s3_hit(bench: Bench) -> Result:
    """The fleet layout: manifests (and small blobs) in Redis, the 1 MiB image only in S3."""
    result = Result("s3_hit_1mib", "S3-tier hit of a 1 MiB result, fleet layout (manifest in Redis, "
                    "image in S3; moto server, memory_bytes=0)",
                    "decorator hit served by S3", "boto3 get_object(...)['Body'].read()")
    return _s3_hit(bench, result, fleet=True)


def bench_s3_only_hit(bench: Bench) -> Result:
    """No Redis: the manifest and the image both come from S3, two GETs one after the other."""
    result = Result("s3_only_hit_1mib", "S3-tier hit of a 1 MiB result, S3 alone (manifest and "
                    "image in S3; moto server, memory_bytes=0)",
                    "decorator hit served by S3", "boto3 get_object(...)['Body'].read()")
    return _s3_hit(bench, result, fleet=False)


def _s3_hit(bench: Bench, result: Result, *, fleet: bool) -> Result:
    server = bench.s3_server
    bucket = f"imgcache-bench-{'fleet' if fleet else 'alone'}"
    server.create_bucket(bucket)
    if fleet:
        cache = bench.cache(s3_bucket=bucket, s3_endpoint_url=server.endpoint_url, memory_bytes=0,
                            redis_url=bench.redis_server.url, redis_max_blob_bytes=64 * 1024)
    else:
        cache = bench.cache(s3_bucket=bucket, s3_endpoint_url=server.endpoint_url, memory_bytes=0)
    tiers = cache.store.tier_names
    if tiers != (["redis", "s3"] if fleet else ["s3"]):
        raise RuntimeError(f"unexpected tiers {tiers}")
    payload = os.urandom(MiB)

    @cache.cached()
    def gen(*, prompt: str, model: str, size: str) -> bytes:
        return payload

    args = {"prompt": "a harbour in the rain", "model": "dall-e-3", "size": "1024x1024"}
    gen(**args)
    cache.flush()

    client = server.client()
    bench._stack.callback(client.close)
    client.put_object(Bucket=bucket, Key="raw/blob", Body=payload)

    def hit() -> Any:
        return gen(**args)

    def baseline() -> Any:
        return client.get_object(Bucket=bucket, Key="raw/blob")["Body"].read()

    client.put_object(Bucket=bucket, Key="raw/small", Body=os.urandom(SMALL))

    def small_get() -> Any:
        return client.get_object(Bucket=bucket, Key="raw/small")["Body"].read()

    assert hit() == payload and baseline() == payload
    loops = bench.loops(result.name)
    result.candidate, result.baseline, small, digest = measure(
        [hit, baseline, small_get, lambda: hashlib.sha256(payload).hexdigest()],
        rounds=loops.rounds, per_round=loops.per_round, warmup=loops.warmup)
    check_tier(cache, "s3", loops.rounds * loops.per_round)
    _floor(result, small, digest, "get_object")
    ratio = result.ratio
    assert ratio is not None
    if fleet:
        result.target = f"<= {S3_MAX_RATIO:g}x baseline"
        result.passed = ratio <= S3_MAX_RATIO
        result.notes.append("a hit is a Redis GET of the manifest, one S3 GET of the image and a "
                            "sha256 of 1 MiB; the baseline is one S3 GET")
    else:
        result.notes.append("a hit is two S3 GETs one after the other (manifest, then image) plus a "
                            "sha256 of 1 MiB; the baseline is one GET. Reported, no target: put "
                            "Redis (or memory) in front of S3 to hold the manifests")
    return result


# -- 4. miss overhead: OpenAI wrapper -----------------------------------------------------------


def bench_openai_miss(bench: Bench) -> Result:
    import openai

    from imgcache.testing import FakeOpenAI

    result = Result("openai_miss_overhead",
                    "miss through imgcache.wrap(openai.OpenAI) vs the raw client "
                    "(FakeOpenAI 256x256, latency 0, embedded cache)",
                    "wrapped images.generate (miss)", "raw client images.generate")
    nagle_fixed = _disable_nagle_in_fake()
    fake = bench._stack.enter_context(FakeOpenAI(image_size=(256, 256), latency=0.0))
    cache = bench.cache(directory=bench.directory("openai"))
    raw = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    bench._stack.callback(raw.close)
    wrapped = imgcache.wrap(openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0), cache)
    bench._stack.callback(wrapped.close)
    counter = itertools.count()

    def miss() -> Any:
        return wrapped.images.generate(model="dall-e-3", prompt=f"bench miss {next(counter)}",
                                       response_format="b64_json")

    def baseline() -> Any:
        return raw.images.generate(model="dall-e-3", prompt=f"bench raw {next(counter)}",
                                   response_format="b64_json")

    first = miss()
    image = base64.b64decode(first.data[0].b64_json)
    result.extra["image_bytes"] = len(image)
    loops = bench.loops(result.name)
    calls = loops.rounds * loops.per_round
    before = cache.stats()
    result.candidate, result.baseline = compare(miss, baseline, rounds=loops.rounds,
                                                per_round=loops.per_round, warmup=loops.warmup)
    after = cache.stats()
    misses = after["misses"] - before["misses"]
    if misses < calls or after["hits"] != before["hits"]:
        raise RuntimeError(f"expected {calls} misses and no hits, stats say {after}")
    _miss_overhead(result)
    if nagle_fixed:
        result.notes.append("FakeOpenAI's handler was given TCP_NODELAY for this run: it sends headers "
                            "and body in two writes, and on a keep-alive connection Nagle plus delayed "
                            "ACK then stalls every answer ~40 ms, on both sides alike")
    result.notes.append(f"each call generates a new {len(image):,}-byte PNG in the fake server "
                        "(same process); the miss stores it in memory and in the directory")
    return result


def _disable_nagle_in_fake() -> bool:
    """Give FakeOpenAI's request handler TCP_NODELAY, in this process only.

    Its replies go out as two writes (headers, then body); with Nagle on, a keep-alive
    connection waits for the client's delayed ACK (~40 ms on Linux) before the body leaves,
    which would swamp the millisecond the benchmark measures. True when the fix was needed.
    """
    from imgcache.testing.openai import server as openai_server

    handler = getattr(openai_server, "_Handler", None)
    if handler is None or getattr(handler, "disable_nagle_algorithm", False):
        return False
    handler.disable_nagle_algorithm = True
    return True


# -- 5. miss overhead: decorator, 1 MiB ---------------------------------------------------------


def bench_decorator_miss(bench: Bench) -> Result:
    result = Result("decorator_miss_1mib",
                    "miss through @cache.cached() on a function returning 1 MiB (embedded cache)",
                    "decorated call (miss)", "the undecorated function")
    cache = bench.cache(directory=bench.directory("decorator-miss"))
    base = os.urandom(MiB)
    counter = itertools.count()

    def make(*, prompt: str, model: str, size: str) -> bytes:
        # Distinct bytes per call (as generated images are), at the cost of one 1 MiB copy.
        return next(counter).to_bytes(8, "big") + base[8:]

    cached = cache.cached()(make)
    prompts = itertools.count()

    def miss() -> Any:
        return cached(prompt=f"bench miss {next(prompts)}", model="dall-e-3", size="1024x1024")

    def baseline() -> Any:
        return make(prompt=f"bench raw {next(prompts)}", model="dall-e-3", size="1024x1024")

    loops = bench.loops(result.name)
    calls = loops.rounds * loops.per_round
    before = cache.stats()
    result.candidate, result.baseline = compare(miss, baseline, rounds=loops.rounds,
                                                per_round=loops.per_round, warmup=loops.warmup)
    after = cache.stats()
    if after["misses"] - before["misses"] < calls or after["hits"] != before["hits"]:
        raise RuntimeError(f"expected {calls} misses and no hits, stats say {after}")
    _miss_overhead(result)
    result.notes.append("a miss also hashes the result, writes it to the memory tier and two files "
                        "(blob, manifest) to the directory")
    return result


def _miss_overhead(result: Result) -> None:
    assert result.candidate is not None and result.baseline is not None
    added_ms = (result.candidate.p50 - result.baseline.p50) / 1000
    result.extra["added_ms_p50"] = round(added_ms, 4)
    result.extra["added_ms_mean"] = round((result.candidate.mean - result.baseline.mean) / 1000, 4)
    result.notes.append(f"added by the miss: {added_ms:.3f} ms at p50 "
                        f"({result.extra['added_ms_mean']:.3f} ms in the mean)")
    result.target = None
    result.passed = None


BENCHMARKS: dict[str, Callable[[Bench], Result]] = {
    "memory_hit_decorator": bench_memory_hit,
    "redis_hit_1mib": bench_redis_hit,
    "s3_hit_1mib": bench_s3_hit,
    "s3_only_hit_1mib": bench_s3_only_hit,
    "openai_miss_overhead": bench_openai_miss,
    "decorator_miss_1mib": bench_decorator_miss,
}
assert tuple(BENCHMARKS) == NAMES


# -- profiling (--profile) ----------------------------------------------------------------------


def profile_memory_hit(bench: Bench, out: TextIO, calls: int = 100_000) -> None:
    """Where the microseconds of a memory hit go: the parts timed alone, then cProfile."""
    import cProfile
    import pstats

    setup = memory_hit_setup(bench)
    try:
        _components(setup, out)
    except Exception as exc:  # noqa: BLE001 - internals moved: the cProfile below still says where time goes
        print(f"\n(components unavailable: {type(exc).__name__}: {exc})", file=out)
    for _ in range(1000):
        setup.hit()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        setup.hit()
    profiler.disable()
    for order, count in (("tottime", 20), ("cumulative", 25)):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats(order).print_stats(count)
        text = buffer.getvalue()
        print(f"\n== cProfile of {calls:,} memory hits, by {order} (profiler overhead inflates "
              "small functions)", file=out)
        print(text[text.find("   ncalls"):].rstrip() if "   ncalls" in text else text, file=out)


def _components(setup: MemoryHit, out: TextIO) -> None:
    """Each part of the hit path timed alone, interleaved with the whole hit (uses internals)."""
    from imgcache._calls import as_stored
    from imgcache.normalize import normalize_prompt
    from imgcache.pricing import generation_cost
    from imgcache.request import KEY_VERSION, Request, canonical_json, canonical_value
    from imgcache.store.base import entry_key

    cache, gen, args = setup.cache, setup.gen, setup.args
    operation = f"{gen.__module__}.{gen.__qualname__}"
    params = {k: v for k, v in args.items() if k != "prompt"}
    request = Request.build("generation", operation, args["prompt"], params)
    if request.key != gen.cache_key(**args):
        raise RuntimeError("the decorator builds its request differently from this breakdown")
    ekey = entry_key(cache.namespace, request.key)
    hit = cache.store.get(cache.namespace, request.key)
    body = {"v": KEY_VERSION, "kind": "generation", "op": operation, "prompt": request.prompt,
            "params": request.params}
    stats = cache.stats_counters
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("whole hit: gen(**args)", setup.hit),
        ("decorator: request + cost (gen.cache_key)", lambda: gen.cache_key(**args)),
        ("  Request.build", lambda: Request.build("generation", operation, args["prompt"], params)),
        ("    normalize_prompt", lambda: normalize_prompt(args["prompt"])),
        ("    canonical_value(params)", lambda: canonical_value(dict(params))),
        ("    canonical_json(key body)", lambda: canonical_json(body)),
        ("  generation_cost", lambda: generation_cost(request.params)),
        ("Cache.fetch(request) (a hit)", lambda: cache.fetch(request, lambda: None)),
        ("  TieredStore.get", lambda: cache.store.get(cache.namespace, request.key)),
        ("    MemoryTier.get (decoded entry)", lambda: cache.store.memory.get(ekey)),
        ("  Calls._serve (decode, stats, lifetime)", lambda: cache._calls._serve(request, hit, as_stored)),
        ("    Stats.add(one hit's counters)", lambda: stats.add(
            {"requests": 1, "hits": 1, "coalesced": 0, "saved_usd": 0.04, "saved_seconds": 0.0,
             "by_tier.memory": 1, "by_match.exact": 1})),
        ("bare work (baseline)", setup.bare),
    ]
    figures = measure([fn for _, fn in parts], rounds=10, per_round=1000, warmup=200)
    rows = [[label, fmt_us(f.p50), fmt_us(f.mean)] for (label, _), f in zip(parts, figures)]
    print("\n== memory-hit path, parts timed alone (interleaved rounds; parts do not add up "
          "exactly)", file=out)
    print(table(["part", "p50 µs", "mean µs"], rows, "lrr"), file=out)


# -- main ------------------------------------------------------------------------------------


def _versions() -> list[tuple[str, str]]:
    facts = []
    names = ("imgcache", "redis", "boto3", "moto", "openai")
    facts.append(("packages", ", ".join(f"{n} {_version(n)}" for n in names)))
    server = shutil.which("redis-server")
    if server:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            line = subprocess.run([server, "--version"], capture_output=True, text=True, check=False,
                                  timeout=10).stdout.split()
            version = next((w.split("=", 1)[1] for w in line if w.startswith("v=")), "?")
            facts.append(("redis-server", version))
    return facts


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


@contextlib.contextmanager
def _bench(quick: bool, out: TextIO) -> Iterator[Bench]:
    bench = Bench(quick, out)
    try:
        yield bench
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                   help=f"run only these benchmarks ({', '.join(NAMES)})")
    p.add_argument("--profile", action="store_true",
                   help="also print a cProfile of the memory-hit path")
    args = p.parse_args(argv)
    selected = args.only or list(NAMES)
    results: list[Result] = []
    with report_stream(args.json) as (out, data):
        print(f"imgcache benchmarks ({'quick' if args.quick else 'default'} loops)", file=out)
        print_facts(_versions(), out)
        with _bench(args.quick, out) as bench:
            for name in selected:
                gc.collect()
                result = run_guarded(name, lambda: BENCHMARKS[name](bench), out)
                results.append(result)
                report(result, out)
                out.flush()
            summary(results, out)
            if args.profile or any(r.name == "memory_hit_decorator" and r.passed is False for r in results):
                if args.profile:
                    profile_memory_hit(bench, out)
                else:
                    print("\nmemory-hit target missed: run with --profile for a cProfile of the hit path",
                          file=out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


if __name__ == "__main__":
    sys.exit(main())
