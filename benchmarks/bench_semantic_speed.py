"""Speed and size of semantic matching with 100,000 entries in one scope.

    python benchmarks/bench_semantic_speed.py [--quick] [--json] [--strict] [--entries N]

One private redis-server on a free loopback port (imgcache.testing.RedisServer) holds the
shared feed. Its 100,000 index records are written in the exact format SemanticMatcher.add
writes (checked against a record written by a real call), through the Redis tier's
``append_records`` in batches; their prompts are made up (DiffusionDB-like: subject, scene,
medium, artist, modifiers) and their vectors are real all-MiniLM-L6-v2 embeddings of a few
thousand such prompts plus noise, so that a lookup finds close candidates and the verifier
has work to do. Embedding 100,000 prompts would take too long here.

1. cold start: a NEW Cache on that Redis (a restarted process), timed from construction to
   ``cache.semantic.sync(force=True)`` having indexed all entries, against redis-py reading
   the same stream with XRANGE (the floor). The model is loaded and warmed before the clock
   starts (it is shared by every cache object of the process); its load time is printed.
2. lookup: ``cache.semantic.propose(request)`` (embed + search + verify) on the cold-started
   cache, each call a new prompt (so the matcher's vector cache never helps), against the
   bare ``model.encode([text])`` of the same text, interleaved.
3. index memory: tracemalloc around another cold start, per entry beyond the vector itself
   (384 float16 = 768 bytes), with a breakdown; and the feed's size in Redis. The HNSW graph
   is native memory (invisible to tracemalloc): its own figure is added.

Exit status is 0 whatever the figures unless a benchmark could not run; with ``--strict`` a
missed target also exits 1. A missed target prints a cProfile of the path that missed it.
"""

from __future__ import annotations

import base64
import contextlib
import cProfile
import gc
import importlib.metadata
import io
import itertools
import json
import pstats
import random
import shutil
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Figures,
    Result,
    emit_json,
    exit_code,
    parser,
    print_facts,
    report,
    report_stream,
    run_guarded,
    summary,
    table,
)

from imgcache import Cache, Request
from imgcache.match.config import FEED
from imgcache.match.semantic.verifier import content_text
from imgcache.store.base import SharedFeeds
from imgcache.store.redis import RedisTier

NAMESPACE = "bench-semantic"
OPERATION = "bench.generate"
PARAMS = {"model": "gpt-image-1", "size": "1024x1024"}
ENTRIES = 100_000
QUICK_ENTRIES = 20_000
DIM_BYTES = 384 * 2  # the feed and the exact-scan matrix keep float16 vectors
GRAPH_VECTOR_BYTES = 384  # the HNSW graph keeps int8 vectors
LOOKUP_P50_MS = 20.0
MEMORY_BEYOND_VECTOR = 1024
COLD_START_S = 10.0
APPEND_BATCH = 2_000
NAMES = ("semantic_cold_start", "semantic_lookup", "semantic_index_memory")

# -- made-up prompts ------------------------------------------------------------------------------

SUBJECTS = """a red fox|an old lighthouse keeper|a cyberpunk samurai|a tiny robot|a golden retriever puppy
|a medieval castle|a steam locomotive|an astronaut|a koi pond|a witch with a black cat|a viking longship
|a bowl of ramen|a futuristic city|a snow leopard|a vintage motorcycle|a wizard reading a book
|a field of sunflowers|a giant octopus|a portrait of a young woman|an abandoned greenhouse|a dragon
|a hummingbird|a cozy cabin|a knight in silver armor|a jazz band|a lone tree|a hot air balloon
|a mechanical owl|a desert caravan|a mermaid|a space station|a tea house|a polar bear|a street market
|a sailing ship|an elephant|a clockwork heart|a gothic cathedral|a mountain village|a neon diner
|a pirate captain|a crystal cave|a fire spirit|a little girl with an umbrella|a bonsai tree""".replace("\n", "")
SCENES = """in the snow|at sunset|on a cliff by the sea|in a misty forest|under a starry sky|in the rain
|in a busy street|on the moon|in an underwater city|in a field of flowers|at dawn|in a dark alley
|by a frozen lake|in a library|on a rooftop|in the desert|in a bamboo forest|during a thunderstorm
|in autumn|at night|inside a glass dome|on a floating island|in a sunlit kitchen|at the beach""".replace("\n", "")
MEDIA = """digital painting|oil painting|watercolor|photograph|concept art|pencil sketch|3d render
|ukiyo-e woodblock print|pixel art|studio ghibli style|cinematic still|matte painting|low poly
|charcoal drawing|anime key visual|art nouveau poster|isometric illustration""".replace("\n", "")
ARTISTS = """greg rutkowski|alphonse mucha|james gurney|studio ghibli|makoto shinkai|moebius
|simon stalenhag|beeple|artgerm|thomas kinkade|hayao miyazaki|ivan aivazovsky|craig mullins
|wlop|john singer sargent|zdzislaw beksinski""".replace("\n", "")
MODIFIERS = """highly detailed|8k|trending on artstation|sharp focus|volumetric lighting|octane render
|intricate|smooth|elegant|unreal engine|dramatic lighting|golden hour|bokeh|hyperrealistic
|soft colors|award winning|masterpiece|4k wallpaper|symmetrical|vivid colors|muted tones""".replace("\n", "")


def _split(text: str) -> list[str]:
    return [w.strip() for w in text.split("|") if w.strip()]


def made_up_prompts(count: int, seed: int) -> list[str]:
    """Distinct DiffusionDB-like prompts, deterministic for a seed."""
    rng = random.Random(seed)
    subjects, scenes, media, artists, modifiers = map(_split, (SUBJECTS, SCENES, MEDIA, ARTISTS, MODIFIERS))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        mods = rng.sample(modifiers, rng.randint(1, 4))
        prompt = (f"{rng.choice(subjects)} {rng.choice(scenes)}, {rng.choice(media)}, "
                  f"by {rng.choice(artists)}, {', '.join(mods)}")
        if prompt not in seen:
            seen.add(prompt)
            out.append(prompt)
    return out


# -- records in SemanticMatcher.add's format -----------------------------------------------------


def encode_record(scope_id: str, key: str, prompt: str, vector: np.ndarray) -> bytes:
    """What SemanticMatcher.add writes to the feed (checked by :func:`check_format`)."""
    return json.dumps({
        "s": scope_id, "k": key, "p": prompt,
        "v": base64.b64encode(np.asarray(vector).astype("<f2").tobytes()).decode(),
    }, separators=(",", ":"), ensure_ascii=False).encode()


def check_format(cache: Cache, tier: Any) -> None:
    """Store one entry through the public API and check that encode_record reproduces the feed
    record SemanticMatcher.add wrote for it, byte for byte."""

    @cache.cached(name=OPERATION)
    def generate(*, prompt: str, model: str = PARAMS["model"], size: str = PARAMS["size"]) -> str:
        return prompt

    generate(prompt="A red fox in the snow, watercolor")
    records, _ = tier.read_records(NAMESPACE, FEED, None)
    if not records:
        raise RuntimeError("the real call wrote no feed record")
    real = records[-1]
    data = json.loads(real)
    vector = np.frombuffer(base64.b64decode(data["v"]), dtype="<f2")
    mine = encode_record(data["s"], data["k"], data["p"], vector)
    if mine != real:
        raise RuntimeError(f"record format drifted:\n real {real[:200]!r}\n mine {mine[:200]!r}")
    request = Request.build("generation", OPERATION, "A red fox in the snow, watercolor", PARAMS)
    matcher = cache.semantic
    assert matcher is not None
    if data["k"] != request.key or data["s"] != matcher.scope_id(request):
        raise RuntimeError("the benchmark builds requests differently from the decorator")


class Corpus:
    """The made-up entries: prompts, keys and vectors (real embeddings of base prompts + noise)."""

    def __init__(self, cache: Cache, entries: int, bases: int, out: TextIO) -> None:
        matcher = cache.semantic
        assert matcher is not None
        started = time.perf_counter()
        base_prompts = made_up_prompts(bases, seed=1)
        model = _model(matcher.embedder)
        base_vectors = model.encode([content_text(Request.build("generation", OPERATION, p, PARAMS).prompt)
                                     for p in base_prompts], batch_size=64, normalize_embeddings=True,
                                    show_progress_bar=False, convert_to_numpy=True).astype(np.float32)
        embedded = time.perf_counter() - started
        rng = np.random.default_rng(7)
        noise = rng.standard_normal((entries, base_vectors.shape[1]), dtype=np.float32) * 0.012
        vectors = base_vectors[np.arange(entries) % bases] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        extra = _split(MODIFIERS)
        self.scope_id = ""
        self.records: list[bytes] = []
        prompt_chars = 0
        for i in range(entries):
            # a distinct text per entry: its base prompt plus modifiers chosen by i // bases
            round_ = i // bases
            suffix = ", ".join(extra[(round_ + k * 7) % len(extra)] for k in range(1 + round_ % 3))
            request = Request.build("generation", OPERATION, f"{base_prompts[i % bases]}, {suffix}, v{round_}",
                                    PARAMS)
            if not self.scope_id:
                self.scope_id = matcher.scope_id(request)
            prompt_chars += len(request.prompt)
            self.records.append(encode_record(self.scope_id, request.key, request.prompt, vectors[i]))
        self.entries = entries
        self.mean_prompt_chars = prompt_chars / entries
        self.record_bytes = sum(map(len, self.records))
        print(f"corpus: {entries:,} made-up entries ({bases:,} base prompts embedded in {embedded:.1f} s, "
              f"vectors = base + noise, mean normalized prompt {self.mean_prompt_chars:.0f} chars, "
              f"feed records {self.record_bytes / entries:,.0f} bytes each) built in "
              f"{time.perf_counter() - started:.1f} s", file=out)


def _model(embedder: Any) -> Any:
    embedder = getattr(embedder, "inner", embedder)  # the model behind the cache's batching
    model = getattr(embedder, "_model", None)
    if model is None and hasattr(embedder, "_load"):
        model = embedder._load()
    if model is None or not hasattr(model, "encode"):
        raise RuntimeError("this benchmark needs the default sentence-transformers embedder")
    return model


# -- the benchmark run ------------------------------------------------------------------------------


class Bench:
    def __init__(self, quick: bool, entries: int | None, out: TextIO) -> None:
        from imgcache.testing import RedisServer

        self.quick = quick
        self.out = out
        self.entries = entries or (QUICK_ENTRIES if quick else ENTRIES)
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(RedisServer())
        self.writer = self.cache()
        matcher = self.writer.semantic
        if matcher is None:
            raise RuntimeError("semantic matching is off")
        loading = time.perf_counter()
        matcher.embedder.embed(["warm up the model"])
        self.model_load_s = time.perf_counter() - loading
        self.model = _model(matcher.embedder)
        print(f"model loaded and warmed in {self.model_load_s:.1f} s (before any clock starts)", file=out)
        self.tier: Any = next((t for t in self.writer.store.tiers if isinstance(t, RedisTier)), None)
        if self.tier is None or self.writer.store.capable(SharedFeeds) is not self.tier:  # not up
            raise RuntimeError("the Redis tier is down")
        check_format(self.writer, self.tier)
        import redis

        self.raw: Any = redis.Redis.from_url(self.server.url)
        self._stack.callback(self.raw.close)
        self.raw.delete(self.stream_key())  # the format-check record: the feed holds only the corpus
        self.corpus = Corpus(self.writer, self.entries, 500 if quick else 2000, out)
        started = time.perf_counter()
        for i in range(0, len(self.corpus.records), APPEND_BATCH):
            self.tier.append_records(NAMESPACE, FEED, self.corpus.records[i:i + APPEND_BATCH], 10 * self.entries)
        length = self.raw.xlen(self.stream_key())
        if length != self.entries:
            raise RuntimeError(f"the feed holds {length} records, not {self.entries}")
        print(f"feed: {length:,} records appended through RedisTier.append_records in batches of "
              f"{APPEND_BATCH:,} in {time.perf_counter() - started:.1f} s", file=out)
        self.restarted: Cache | None = None
        self.profiles: list[str] = []  # printed after the benchmark's report

    def stream_key(self) -> str:
        keys = [k for k in self.raw.scan_iter(match=f"*{NAMESPACE}*", _type="STREAM")
                if k.decode().endswith(f":{FEED}")]
        if len(keys) != 1:
            raise RuntimeError(f"expected one feed stream, found {keys}")
        return keys[0].decode()

    def cache(self) -> Cache:
        cache = Cache(namespace=NAMESPACE, redis_url=self.server.url, semantic=True)
        self._stack.callback(cache.close)
        return cache

    def close(self) -> None:
        self._stack.close()

    def request(self, prompt: str) -> Request:
        return Request.build("generation", OPERATION, prompt, PARAMS)


def cold_start(bench: Bench) -> tuple[Cache, float]:
    started = time.perf_counter_ns()
    cache = Cache(namespace=NAMESPACE, redis_url=bench.server.url, semantic=True)
    matcher = cache.semantic
    assert matcher is not None
    added = matcher.sync(force=True)
    elapsed = time.perf_counter_ns() - started
    scope = matcher.index.get(bench.corpus.scope_id)
    if added != bench.entries or scope is None or len(scope) != bench.entries:
        cache.close()
        raise RuntimeError(f"the cold start indexed {added} records ({0 if scope is None else len(scope)} in "
                           f"the scope), not {bench.entries}: did a Redis read time out?")
    return cache, elapsed


def xrange_floor(bench: Bench) -> float:
    key = bench.stream_key()
    started = time.perf_counter_ns()
    count, cursor = 0, "-"
    while True:
        rows: Any = bench.raw.xrange(key, min=cursor, max="+", count=10_000)
        count += len(rows)
        if len(rows) < 10_000:
            break
        cursor = "(" + rows[-1][0].decode()
    elapsed = time.perf_counter_ns() - started
    if count != bench.entries:
        raise RuntimeError(f"XRANGE read {count} records")
    return elapsed


def bench_cold_start(bench: Bench) -> Result:
    result = Result("semantic_cold_start",
                    f"cold start of {bench.entries:,} entries from Redis: new Cache -> semantic.sync(force=True) "
                    "sees them all", "Cache(...) + semantic.sync(force=True)",
                    "redis-py XRANGE of the stream (pages of 10,000)")
    rounds = 1 if bench.quick else 3
    cand: list[float] = []
    base: list[float] = []
    for index in range(rounds):
        if bench.restarted is not None:
            bench.restarted.close()
            bench.restarted = None
        gc.collect()
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for side in order:
            if side == 0:
                cache, elapsed = cold_start(bench)
                bench.restarted = cache
                cand.append(elapsed)
            else:
                base.append(xrange_floor(bench))
    assert bench.restarted is not None

    def close_restarted() -> None:
        if bench.restarted is not None:
            bench.restarted.close()

    bench._stack.callback(close_restarted)
    result.candidate, result.baseline = Figures.from_ns(cand), Figures.from_ns(base)
    seconds = result.candidate.p50 / 1e6
    result.target = f"<= {COLD_START_S:g} s"
    result.passed = seconds <= COLD_START_S
    result.extra.update({"seconds_p50": round(seconds, 3), "xrange_seconds_p50": round(result.baseline.p50 / 1e6, 3),
                         "entries": bench.entries, "model_load_seconds": round(bench.model_load_s, 3)})
    result.notes.append(f"cold start p50 {seconds:.2f} s for {bench.entries:,} entries "
                        f"({result.candidate.p50 / bench.entries:.1f} µs an entry); XRANGE alone "
                        f"{result.baseline.p50 / 1e6:.2f} s; {rounds} round(s), the two alternating")
    result.notes.append(f"the model was loaded before the clock (it took {bench.model_load_s:.1f} s in this "
                        "process; models are shared by every cache object of a process)")
    scale = ENTRIES / bench.entries
    if scale != 1:
        result.notes.append(f"quick: {bench.entries:,} entries; scaled linearly to {ENTRIES:,}: "
                            f"{seconds * scale:.1f} s")
        result.extra["seconds_scaled_to_100k"] = round(seconds * scale, 3)
        result.passed = seconds * scale <= COLD_START_S
    memory = int(bench.raw.memory_usage(bench.stream_key(), samples=0) or 0)
    result.extra["feed_bytes"] = memory
    result.extra["feed_bytes_per_entry"] = round(memory / bench.entries, 1)
    result.notes.append(f"the feed in Redis: MEMORY USAGE {memory / 2**20:,.1f} MiB = "
                        f"{memory / bench.entries:,.0f} bytes an entry (records are "
                        f"{bench.corpus.record_bytes / bench.entries:,.0f} bytes of JSON: float16 vector "
                        f"in base64, key, scope, prompt)")
    if not result.passed:
        profile(bench, lambda: cold_start(bench)[0].close(), "a cold start")
    return result


def bench_lookup(bench: Bench) -> Result:
    result = Result("semantic_lookup",
                    f"semantic lookup on an exact miss, {bench.entries:,} entries in the scope "
                    "(embed + search + verify)", "cache.semantic.propose(request)",
                    "bare model.encode([text]) of the same text")
    cache = bench.restarted
    if cache is None:
        cache, _ = cold_start(bench)
        bench.restarted = cache
    matcher = cache.semantic
    assert matcher is not None
    scope = matcher.index.get(bench.corpus.scope_id)
    assert scope is not None and len(scope) == bench.entries
    samples = 60 if bench.quick else 300
    prompts = made_up_prompts(samples + 20, seed=99)
    counter = itertools.count()
    cand: list[float] = []
    base: list[float] = []
    search: list[float] = []
    verified: list[int] = []
    clock = time.perf_counter_ns
    for index, prompt in enumerate(prompts):
        # a new prompt text each call: the matcher's vector cache (by exact key) never helps
        request = bench.request(f"{prompt}, take {next(counter)}")
        text = content_text(request.prompt)

        def candidate(request: Request = request) -> list[Any]:
            return matcher.propose(request)

        def baseline(text: str = text) -> Any:
            return bench.model.encode([text], show_progress_bar=False, convert_to_numpy=True)

        sides: list[tuple[list[float], Callable[[], Any]]] = [(cand, candidate), (base, baseline)]
        if index % 2:
            sides.reverse()
        timed: dict[int, Any] = {}
        for out, fn in sides:
            started = clock()
            value = fn()
            elapsed = clock() - started
            if index >= 20:  # the first 20 are a warm-up
                out.append(elapsed)
            timed[id(out)] = value
        proposals = timed[id(cand)]
        vector = matcher.embedder.embed([text])[0]
        started = clock()
        found = scope.search(vector, matcher.options.candidates, matcher.options.min_similarity)
        if index >= 20:
            search.append(clock() - started)
            verified.append(len(proposals))
        if any(p.verdict.same for p in proposals):
            raise RuntimeError(f"a made-up query was accepted: {request.prompt!r}")
        del found
    # Reference: the bare encode with no numpy search in between (BLAS threads that spin after a
    # large matrix-vector product compete with torch's threads on a small machine).
    alone: list[float] = []
    for prompt in made_up_prompts(40 if bench.quick else 80, seed=123)[10:]:
        text = content_text(bench.request(f"{prompt}, alone").prompt)
        started = clock()
        bench.model.encode([text], show_progress_bar=False, convert_to_numpy=True)
        alone.append(clock() - started)
    alone_figures = Figures.from_ns(alone)
    result.candidate, result.baseline = Figures.from_ns(cand), Figures.from_ns(base)
    search_figures = Figures.from_ns(search)
    p50_ms = result.candidate.p50 / 1000
    result.target = f"p50 <= {LOOKUP_P50_MS:g} ms"
    result.passed = p50_ms <= LOOKUP_P50_MS
    result.extra.update({"p50_ms": round(p50_ms, 3), "encode_p50_ms": round(result.baseline.p50 / 1000, 3),
                         "search_alone": search_figures.as_dict(), "entries": bench.entries,
                         "candidates_verified_mean": round(float(np.mean(verified)), 2)})
    result.notes.append(f"p50 {p50_ms:.2f} ms = bare encode {result.baseline.p50 / 1000:.2f} ms + "
                        f"{(result.candidate.p50 - result.baseline.p50) / 1000:.2f} ms; the search alone "
                        f"(ScopeIndex.search of {bench.entries:,} rows, timed after each call) "
                        f"p50 {search_figures.p50 / 1000:.2f} ms, p90 {search_figures.p90 / 1000:.2f} ms")
    result.extra["encode_alone_p50_ms"] = round(alone_figures.p50 / 1000, 3)
    result.notes.append(f"the bare encode alone, back to back with no search in between: p50 "
                        f"{alone_figures.p50 / 1000:.2f} ms, p90 {alone_figures.p90 / 1000:.2f} ms "
                        f"({alone_figures.n} calls); interleaved with lookups (the baseline above) it is "
                        f"{result.baseline.p50 / alone_figures.p50:.2f}x that")
    result.notes.append(f"each lookup verified {np.mean(verified):.1f} candidates on average "
                        f"(up to {matcher.options.candidates} with cosine >= {matcher.options.min_similarity}); "
                        f"{len(cand)} lookups after 20 warm-up ones, each a new prompt; sides interleaved, "
                        "order alternating")
    if bench.entries != ENTRIES:
        result.notes.append(f"quick: {bench.entries:,} entries, not {ENTRIES:,}: the search part is smaller")
    if not result.passed:
        more = iter(made_up_prompts(200, seed=5))
        profile(bench, lambda: [matcher.propose(bench.request(f"{next(more)}, profiled {i}")) for i in range(50)],
                "50 semantic lookups")
    return result


def bench_memory(bench: Bench) -> Result:
    result = Result("semantic_index_memory",
                    f"index memory of {bench.entries:,} entries (tracemalloc around a cold start)", "", "")
    if bench.restarted is not None:  # one index in memory at a time
        bench.restarted.close()
        bench.restarted = None
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        cache = Cache(namespace=NAMESPACE, redis_url=bench.server.url, semantic=True)
        matcher = cache.semantic
        assert matcher is not None
        matcher.sync(force=True)
        scope = matcher.index.get(bench.corpus.scope_id)
        assert scope is not None and len(scope) == bench.entries
        scope.wait_for_graph()  # the graph is built in the background: measure it whole
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n = bench.entries
    graph_bytes = scope._graph.memory_usage if scope._graph is not None else 0
    total = after - before + graph_bytes
    per_entry = total / n
    # The vector itself, as the index holds it: int8 in the graph, float16 in the newer rows.
    vector_bytes = (scope._graphed * GRAPH_VECTOR_BYTES + (n - scope._graphed) * DIM_BYTES) / n
    beyond = per_entry - vector_bytes
    parts = breakdown(scope, n)
    cache.close()
    result.target = f"<= {MEMORY_BEYOND_VECTOR:,} bytes an entry beyond the vector"
    result.passed = beyond <= MEMORY_BEYOND_VECTOR
    result.extra.update({"entries": n, "traced_bytes": total, "bytes_per_entry": round(per_entry, 1),
                         "vector_bytes": round(vector_bytes, 1), "beyond_vector_bytes_per_entry": round(beyond, 1),
                         "peak_bytes_during_sync": peak - before, "breakdown_bytes_per_entry": parts})
    rows = [[name, f"{value:,.1f}"] for name, value in parts.items()]
    result.notes.append("per entry (bytes):\n" + table(["part", "bytes/entry"], rows, "lr"))
    result.notes.append(f"traced after the sync: {total / 2**20:,.1f} MiB = {per_entry:,.0f} bytes an entry = "
                        f"{vector_bytes:,.0f} (the vector: 384 int8 in the graph, float16 before it) + "
                        f"{beyond:,.0f} beyond it (HNSW graph "
                        f"{graph_bytes / 2**20:,.1f} MiB included); "
                        f"peak during the sync {(peak - before) / 2**20:,.1f} MiB")
    return result


def breakdown(scope: Any, n: int) -> dict[str, float]:
    """Where an entry's bytes go (uses the index's internals; they may move)."""
    parts: dict[str, float] = {}
    try:
        vectors, live = scope._vectors, scope._live
        graph = scope._graph.memory_usage if scope._graph is not None else 0
        parts["vector (int8 in the graph, float16 before it)"] = (
            scope._graphed * GRAPH_VECTOR_BYTES + (n - scope._graphed) * DIM_BYTES) / n
        parts["HNSW graph beyond its vectors (links, levels, spare capacity)"] = (
            graph - scope._graphed * GRAPH_VECTOR_BYTES) / n
        parts["matrix of rows not yet in the graph"] = vectors.nbytes / n
        parts["live mask"] = live.nbytes / n
        keys, prompts, rows = scope._keys, scope._prompts, scope._rows
        parts["key str (64 hex chars)"] = sum(sys.getsizeof(k) for k in keys) / n
        parts["prompt str"] = sum(sys.getsizeof(p) for p in prompts) / n
        parts["lists of keys and prompts"] = (sys.getsizeof(keys) + sys.getsizeof(prompts)) / n
        parts["dict key -> row (+ row ints)"] = (sys.getsizeof(rows) + sum(sys.getsizeof(r) for r in rows.values()
                                                                          if r > 256)) / n
    except AttributeError as exc:
        parts["(breakdown unavailable)"] = 0.0
        print(f"(index internals moved: {exc})", file=sys.stderr)
    return {k: round(v, 1) for k, v in parts.items()}


def report_memory(result: Result, out: TextIO) -> None:
    print(f"\n== {result.name}: {result.title}", file=out)
    if result.error is not None:
        print(f"   ERROR: {result.error}", file=out)
        return
    for note in result.notes:
        print(note if note.startswith("per entry") else f"note: {note}", file=out)
    print(f"target: {result.target}  ->  {result.verdict}", file=out)


def profile(bench: Bench, fn: Callable[[], Any], what: str) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(15)
    text = buffer.getvalue()
    bench.profiles.append(f"\n== target missed: cProfile of {what}, by tottime\n"
                          + (text[text.find("   ncalls"):].rstrip() if "   ncalls" in text else text))


# -- main -----------------------------------------------------------------------------------------


def _versions() -> list[tuple[str, str]]:
    names = ("imgcache", "sentence-transformers", "torch", "numpy", "redis")
    facts = []
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    facts.append(("packages", ", ".join(versions)))
    server = shutil.which("redis-server")
    if server:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            line = subprocess.run([server, "--version"], capture_output=True, text=True, check=False,
                                  timeout=10).stdout.split()
            facts.append(("redis-server", next((w.split("=", 1)[1] for w in line if w.startswith("v=")), "?")))
    with contextlib.suppress(ImportError):
        import torch

        facts.append(("torch threads", str(torch.get_num_threads())))
    return facts


BENCHMARKS: dict[str, Callable[[Bench], Result]] = {
    "semantic_cold_start": bench_cold_start,
    "semantic_lookup": bench_lookup,
    "semantic_index_memory": bench_memory,
}
assert tuple(BENCHMARKS) == NAMES


@contextlib.contextmanager
def _bench(quick: bool, entries: int | None, out: TextIO) -> Iterator[Bench]:
    bench = Bench(quick, entries, out)
    try:
        yield bench
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=None,
                   help=f"entries in the scope (default {ENTRIES:,}; {QUICK_ENTRIES:,} with --quick)")
    args = p.parse_args(argv)
    results: list[Result] = []
    with report_stream(args.json) as (out, data):
        print(f"imgcache semantic speed and size ({'quick' if args.quick else 'default'} run)", file=out)
        print_facts(_versions(), out)
        try:
            with _bench(args.quick, args.entries, out) as bench:
                for name in NAMES:
                    gc.collect()
                    result = run_guarded(name, lambda: BENCHMARKS[name](bench), out)
                    results.append(result)
                    (report_memory if name == "semantic_index_memory" or result.error else report)(result, out)
                    for text in bench.profiles:
                        print(text, file=out)
                    bench.profiles.clear()
                    out.flush()
        except Exception as exc:  # noqa: BLE001 - the setup failed: every benchmark is an error
            traceback.print_exc(file=out)
            results = [Result(name, "could not run", "", "") for name in NAMES]
            for result in results:
                result.error = f"setup: {type(exc).__name__}: {exc}"
        summary(results, out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


if __name__ == "__main__":
    sys.exit(main())
