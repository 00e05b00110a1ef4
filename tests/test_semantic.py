"""Semantic matching of generation prompts, through the public API.

The real all-MiniLM-L6-v2 model (loaded once per module) answers the accuracy-flavoured tests
(paraphrases, bad input, ``wrap``, async); plumbing tests (scopes, feeds, restarts, vanished
entries, corrupt records) use a tiny deterministic bag-of-words embedder that also counts what
it embeds. Results are a function of the prompt, so a wrong image is always detectable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import imgcache
from imgcache import Cache
from imgcache.match.config import SemanticOptions
from imgcache.normalize import normalize_prompt
from imgcache.testing import FakeOpenAI

from _helpers import BagOfWords, Upstream, bow_options, expected, generator

TESTS = Path(__file__).resolve().parent
IMAGES = "/v1/images/generations"

STORED = "a photo of a red fox in snow"
PARAPHRASES = [
    "Generate an image of a photo of a red fox in snow",
    "red fox in the snow, photo",
    "a photograph of a red fox in snow",
]
DIFFERENT = [
    "a photo of a blue fox in snow",
    "a painting of a red fox in snow",
    "two red foxes in snow",
    "a red fox in snow at night",
]
# For the bag-of-words embedder: filler only, so the verifier accepts and the vectors agree.
FOX = "a red fox in snow"
FOX_AGAIN = "please draw a red fox in snow"
FOX_ONCE_MORE = "Generate an image of a red fox in snow, please"


# --- helpers ---------------------------------------------------------------------------------


class NotYet(Exception):
    """Raised by an upstream that must not be reached: the lookup should have hit."""


def refusing(cache: Cache, name: str = "gen") -> Callable[..., bytes]:
    """The same function as :func:`generator` (same name), whose upstream always fails:
    a miss raises NotYet and stores nothing, so a test can poll for an eventual hit."""

    @cache.cached(name=name)
    def generate(*, prompt: str) -> bytes:
        raise NotYet(prompt)

    return generate


def poll(generate: Callable[..., bytes], prompt: str, timeout: float = 3.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return generate(prompt=prompt)
        except NotYet:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def semantic_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "semantic matching failed" in r.getMessage()]


@pytest.fixture(scope="module")
def model() -> Any:
    """The real default model, loaded once: every default Cache of the module shares it."""
    from imgcache.match.semantic.embed import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up"])
    return embedder


def run_script(processes: list[subprocess.Popen[str]], source: str, *args: str) -> dict[str, Any]:
    process = subprocess.Popen([sys.executable, "-c", source, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(process)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, f"script failed ({process.returncode}):\n{err}"
    return json.loads(out.strip().splitlines()[-1])


# --- the real model: paraphrases hit, other pictures miss ------------------------------------


def test_paraphrases_hit_and_other_pictures_miss(model: Any, tmp_path: Path) -> None:
    upstream = Upstream()
    with Cache("sem", directory=tmp_path) as cache:
        generate = generator(cache, upstream)
        original = generate(prompt=STORED)
        for prompt in PARAPHRASES:
            assert generate(prompt=prompt) == original, prompt
        assert upstream.prompts == [STORED]
        stats = cache.stats()
        assert stats["by_match"]["semantic"] == 3 and stats["hits"] == 3
        assert len(cache.recent_semantic_hits()) == 3

        # A repeat is an exact hit of the alias entry (no new semantic lookup), still semantic.
        assert generate(prompt=PARAPHRASES[1]) == original
        stats = cache.stats()
        assert stats["by_match"]["semantic"] == 4 and stats["by_match"]["exact"] == 0
        assert len(cache.recent_semantic_hits()) == 3

        for prompt in DIFFERENT:
            assert generate(prompt=prompt) == expected(prompt), prompt
        assert upstream.prompts == [STORED, *DIFFERENT]
        assert cache.stats()["by_match"]["semantic"] == 4

    # The alias entry outlives the process: a new cache object on the directory hits it.
    with Cache("sem", directory=tmp_path) as again:
        assert generator(again, upstream)(prompt=PARAPHRASES[2]) == original
        assert again.stats()["by_match"]["semantic"] == 1
    assert upstream.calls == 1 + len(DIFFERENT)


def test_wrap_answers_paraphrases_from_the_cache(
    model: Any, tmp_path: Path, openai_client: Any, fake_openai: FakeOpenAI
) -> None:
    with Cache("wrap-sem", directory=tmp_path) as cache:
        client = imgcache.wrap(openai_client, cache=cache)

        def generate(prompt: str, **kwargs: Any) -> list[bytes]:
            response = client.images.generate(prompt=prompt, model="dall-e-3",
                                              response_format="b64_json", **kwargs)
            return [base64.b64decode(image.b64_json) for image in response.data]

        original = generate(STORED)
        assert original[0].startswith(b"\x89PNG")
        for prompt in PARAPHRASES:
            assert generate(prompt) == original, prompt
        assert fake_openai.calls(IMAGES) == 1
        for prompt in DIFFERENT:
            assert generate(prompt) != original, prompt
        assert fake_openai.calls(IMAGES) == 1 + len(DIFFERENT)
        # An output-changing parameter is part of the scope.
        generate(PARAPHRASES[0], size="1792x1024")
        assert fake_openai.calls(IMAGES) == 2 + len(DIFFERENT)
        assert cache.stats()["by_match"]["semantic"] == 3


def test_async_functions_get_semantic_hits(model: Any, tmp_path: Path) -> None:
    upstream = Upstream()
    with Cache("async", directory=tmp_path) as cache:

        @cache.cached(name="agen")
        async def generate(*, prompt: str) -> bytes:
            await asyncio.sleep(0)
            return upstream(prompt)

        async def main() -> tuple[bytes, list[bytes], bytes, bytes]:
            original = await generate(prompt=STORED)
            hits = await asyncio.gather(*(generate(prompt=p) for p in PARAPHRASES[:2]))
            with cache.options(semantic=False):
                switched_off = await generate(prompt=PARAPHRASES[2])
            different = await generate(prompt=DIFFERENT[0])
            return original, list(hits), switched_off, different

        original, hits, switched_off, different = asyncio.run(main())
        assert hits == [original, original]
        assert switched_off == expected(PARAPHRASES[2])
        assert different == expected(DIFFERENT[0])
        assert upstream.prompts == [STORED, PARAPHRASES[2], DIFFERENT[0]]
        assert cache.stats()["by_match"]["semantic"] == 2


# --- scope -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("one", "two"), [
    pytest.param(("ns-a", "bow"), ("ns-b", "bow"), id="namespaces"),
    # The same vectors under two names: only the embedder's name keeps the scopes apart.
    pytest.param(("emb", "bow-1"), ("emb", "bow-2"), id="embedders"),
])
def test_a_semantic_match_never_crosses(
    tmp_path: Path, one: tuple[str, str], two: tuple[str, str]
) -> None:
    """Two caches on one directory, ``(namespace, embedder name)`` each, one of them differing."""
    upstream = Upstream()
    with Cache(one[0], directory=tmp_path, semantic=bow_options(name=one[1])) as a, \
            Cache(two[0], directory=tmp_path, semantic=bow_options(name=two[1])) as b:
        gen_a, gen_b = generator(a, upstream), generator(b, upstream)
        original = gen_a(prompt=FOX)
        assert gen_b(prompt=FOX_AGAIN) == expected(FOX_AGAIN)
        assert gen_a(prompt=FOX_ONCE_MORE) == original  # the control: within one scope it hits
        assert b.stats()["by_match"]["semantic"] == 0 and a.stats()["by_match"]["semantic"] == 1
    assert upstream.prompts == [FOX, FOX_AGAIN]


def test_invalidate_reaches_the_semantic_aliases_of_a_result(tmp_path: Path) -> None:
    upstream = Upstream()
    with Cache("inv", directory=tmp_path, semantic=bow_options()) as cache:
        generate = generator(cache, upstream)
        original = generate(prompt=FOX)
        assert generate(prompt=FOX_AGAIN) == original  # stored under FOX_AGAIN's key: an alias
        generate.invalidate(prompt=FOX)
        fresh = generate(prompt=FOX_AGAIN)  # the alias is refused: asked anew
        assert fresh == expected(FOX_AGAIN)
        assert generate(prompt=FOX) == fresh  # its own entry is gone: matched to the new result
        assert generate(prompt=FOX_ONCE_MORE) == fresh
    assert upstream.prompts == [FOX, FOX_AGAIN]


@pytest.mark.parametrize("changed", [{"size": "512x512"}, {"model": "m2"}, {"quality": "hd"}])
def test_a_semantic_match_never_crosses_output_changing_parameters(
    tmp_path: Path, changed: dict[str, str]
) -> None:
    upstream = Upstream()
    with Cache("params", directory=tmp_path, semantic=bow_options()) as cache:

        @cache.cached(name="gen")
        def generate(*, prompt: str, model: str = "m1", size: str = "1024x1024",
                     quality: str = "standard") -> bytes:
            return upstream(prompt, model=model, size=size, quality=quality)

        original = generate(prompt=FOX)
        params = {"model": "m1", "size": "1024x1024", "quality": "standard", **changed}
        assert generate(prompt=FOX_AGAIN, **changed) == expected(FOX_AGAIN, **params)
        assert generate(prompt=FOX_ONCE_MORE) == original  # the control: same parameters hit
        assert upstream.prompts == [FOX, FOX_AGAIN]
        assert cache.stats()["by_match"]["semantic"] == 1


def test_a_semantic_match_never_crosses_functions(tmp_path: Path) -> None:
    upstream = Upstream()
    with Cache("fns", directory=tmp_path, semantic=bow_options()) as cache:
        gen_a, gen_b = generator(cache, upstream, "gen-a"), generator(cache, upstream, "gen-b")
        original = gen_a(prompt=FOX)
        assert gen_b(prompt=FOX_AGAIN) == expected(FOX_AGAIN)
        assert gen_a(prompt=FOX_ONCE_MORE) == original
    assert upstream.prompts == [FOX, FOX_AGAIN]


# --- switching it off ----------------------------------------------------------------------


def test_semantic_matching_can_be_switched_off_per_call(tmp_path: Path) -> None:
    upstream = Upstream()
    with Cache("switch", directory=tmp_path, semantic=bow_options()) as cache:
        generate = generator(cache, upstream)
        original = generate(prompt=FOX)
        with cache.options(semantic=False):
            assert generate(prompt=FOX_AGAIN) == expected(FOX_AGAIN)
            assert generate(prompt=FOX) == original  # exact matching still works
        assert generate(prompt=FOX_ONCE_MORE) == original
        assert upstream.prompts == [FOX, FOX_AGAIN]
        assert cache.stats()["by_match"]["semantic"] == 1


NO_MODEL_SCRIPT = """
import json, sys
from imgcache import Cache

with Cache("off", directory=sys.argv[1], semantic=False) as cache:
    @cache.cached(name="gen")
    def generate(*, prompt):
        return ("image for " + prompt).encode()

    prompts = ["a red fox in snow", "please draw a red fox in snow", "a red fox in snow"]
    results = [generate(prompt=p).decode() for p in prompts]
    stats = cache.stats()
loaded = [m for m in ("sentence_transformers", "transformers", "torch") if m in sys.modules]
print(json.dumps({"results": results, "stats": stats, "loaded": loaded}))
"""


def test_a_cache_without_semantic_matching_never_loads_a_model(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    out = run_script(processes, NO_MODEL_SCRIPT, str(tmp_path))
    assert out["loaded"] == []
    assert out["results"] == ["image for a red fox in snow", "image for please draw a red fox in snow",
                              "image for a red fox in snow"]
    assert out["stats"]["hits"] == 1 and out["stats"]["by_match"]["semantic"] == 0


# --- a shared index ------------------------------------------------------------------------


def test_an_entry_stored_by_one_cache_is_found_semantically_by_another(
    shared_storage: dict[str, Any]
) -> None:
    upstream = Upstream()
    with Cache("fleet", semantic=bow_options(), **shared_storage) as a, \
            Cache("fleet", semantic=bow_options(), **shared_storage) as b:
        generator(b, upstream)(prompt="a lighthouse on a cliff")  # b's index is live before a stores
        original = generator(a, upstream)(prompt=FOX)
        assert poll(refusing(b), FOX_AGAIN) == original
        assert upstream.prompts == ["a lighthouse on a cliff", FOX]
        assert b.stats()["by_match"]["semantic"] == 1


WORKER_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from imgcache import Cache
from _helpers import Upstream, bow_options, generator

upstream = Upstream()
with Cache("fleet", redis_url=sys.argv[2], semantic=bow_options()) as cache:
    value = generator(cache, upstream)(prompt=sys.argv[3])
print(json.dumps({"calls": upstream.calls, "value": value.decode()}))
"""


def test_an_entry_stored_by_another_process_is_found_semantically(
    redis_url: str, processes: list[subprocess.Popen[str]]
) -> None:
    upstream = Upstream()
    with Cache("fleet", redis_url=redis_url, semantic=bow_options()) as cache:
        generator(cache, upstream)(prompt="a lighthouse on a cliff")  # the index is live
        out = run_script(processes, WORKER_SCRIPT, str(TESTS), redis_url, FOX)
        assert out == {"calls": 1, "value": expected(FOX).decode()}
        assert poll(refusing(cache), FOX_AGAIN) == expected(FOX)
        assert cache.stats()["by_match"]["semantic"] == 1
    assert upstream.prompts == ["a lighthouse on a cliff"]


ANIMALS = ["fox", "owl", "heron", "otter", "badger", "lynx", "moose", "hare", "crow", "seal"]


def test_a_restarted_cache_rebuilds_its_index_without_re_embedding(
    shared_storage: dict[str, Any]
) -> None:
    upstream = Upstream()
    prompts = [f"a watercolor of a {animal} in a garden" for animal in ANIMALS]
    first = BagOfWords()
    with Cache("restart", semantic=bow_options(first), **shared_storage) as a:
        generate = generator(a, upstream)
        originals = [generate(prompt=p) for p in prompts]
    assert len(first.texts) == len(prompts)

    second = BagOfWords()
    with Cache("restart", semantic=bow_options(second), **shared_storage) as b:
        generate = generator(b, upstream)
        queries = [f"please draw {p}" for p in prompts[:3]]
        for query, original in zip(queries, originals):
            assert generate(prompt=query) == original, query
        assert b.stats()["by_match"]["semantic"] == len(queries)
    assert upstream.calls == len(prompts)
    assert len(second.texts) == len(queries)  # the stored prompts were not embedded again


# --- vanished entries --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_a_vanished_entry_is_a_miss_and_leaves_the_index(
    shared_storage: dict[str, Any], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = Upstream()
    ttl = 0.5 if how == "expired" else None
    with Cache("gone", ttl=ttl, semantic=bow_options(), **shared_storage) as a, \
            Cache("gone", ttl=ttl, semantic=bow_options(), **shared_storage) as b:
        gen_a, gen_b = generator(a, upstream), generator(b, upstream)
        gen_b(prompt="a lighthouse on a cliff")
        gen_a(prompt=FOX)
        b.semantic.sync(force=True)
        assert len(b.semantic.index) == 2
        if how == "deleted":
            gen_a.invalidate(prompt=FOX)  # from every tier (b never held it in memory)
        else:
            time.sleep(ttl + 0.3)
        with caplog.at_level(logging.WARNING, logger="imgcache"):
            assert gen_b(prompt=FOX_AGAIN) == expected(FOX_AGAIN)
        assert upstream.prompts == ["a lighthouse on a cliff", FOX, FOX_AGAIN]
        assert semantic_failures(caplog) == []
        # The vanished entry is gone from b's index: the lighthouse and the new entry remain.
        assert len(b.semantic.index) == 2
        assert gen_b(prompt=FOX_ONCE_MORE) == expected(FOX_AGAIN)  # matches the new entry
        assert upstream.calls == 3


# --- corrupt feed records ------------------------------------------------------------------------


def _feed_records(shared: dict[str, Any], namespace: str) -> list[bytes]:
    if "redis_url" in shared:
        import redis

        client = redis.Redis.from_url(shared["redis_url"])
        try:
            return [fields[b"r"] for _, fields in client.xrange(f"imgcache:{namespace}:semantic")]
        finally:
            client.close()
    return (Path(shared["directory"]) / namespace / "semantic.log").read_bytes().splitlines()


def _push_records(shared: dict[str, Any], namespace: str, records: list[bytes]) -> None:
    if "redis_url" in shared:
        import redis

        client = redis.Redis.from_url(shared["redis_url"])
        try:
            for record in records:
                client.xadd(f"imgcache:{namespace}:semantic", {"r": record})
        finally:
            client.close()
    else:
        with open(Path(shared["directory"]) / namespace / "semantic.log", "ab") as log:
            log.write(b"".join(record + b"\n" for record in records))


def _forged(template: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({**template, **fields}).encode()


def _vector(values: np.ndarray) -> str:
    return base64.b64encode(values.astype("<f2").tobytes()).decode()


def _corrupt_records(template: dict[str, Any]) -> list[bytes]:
    dim = len(base64.b64decode(template["v"])) // 2
    return [
        b"\x00\xff\xfe garbage \x80\x81",
        b"not json {",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"s": "only a scope"}',
        _forged(template, k="not-a-key"),
        _forged(template, p=5),
        _forged(template, v="!!! not base64 !!!"),
        _forged(template, v=base64.b64encode(b"\x01\x02\x03").decode()),  # odd length
        _forged(template, v=_vector(np.full(dim, np.nan))),
        _forged(template, v=_vector(np.full(dim, np.inf))),
    ]


def _check_lookups_survive(shared_storage: dict[str, Any], records: list[bytes],
                           caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream()
    with Cache("corrupt", semantic=bow_options(), **shared_storage) as a:
        generate = generator(a, upstream)
        original = generate(prompt=FOX)
        assert generate(prompt=FOX_AGAIN) == original  # a's feed cursor is set
        _push_records(shared_storage, "corrupt", records)
        with caplog.at_level(logging.WARNING, logger="imgcache"):
            a.semantic.sync(force=True)
            assert a.stats()["corrupt"] == len(records)
            assert generate(prompt=FOX_ONCE_MORE) == original  # incremental sync: still works
            with Cache("corrupt", semantic=bow_options(), **shared_storage) as b:  # a cold start too
                assert generator(b, upstream)(prompt="can you make a red fox in snow") == original
                assert b.stats()["corrupt"] == len(records)
                assert b.stats()["by_match"]["semantic"] == 1
        assert semantic_failures(caplog) == []
    assert upstream.prompts == [FOX]


def test_corrupt_feed_records_are_skipped_and_counted(
    shared_storage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with Cache("corrupt", semantic=bow_options(), **shared_storage) as seed:
        generator(seed, Upstream())(prompt="a lighthouse on a cliff")  # a valid record to forge from
    template = json.loads(_feed_records(shared_storage, "corrupt")[0])
    _check_lookups_survive(shared_storage, _corrupt_records(template), caplog)


def test_a_feed_record_with_a_vector_of_the_wrong_length_is_skipped(
    shared_storage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with Cache("corrupt", semantic=bow_options(), **shared_storage) as seed:
        generator(seed, Upstream())(prompt="a lighthouse on a cliff")
    template = json.loads(_feed_records(shared_storage, "corrupt")[0])
    dim = len(base64.b64decode(template["v"])) // 2
    shorter = np.zeros(dim // 4)
    shorter[0] = 1.0
    _check_lookups_survive(shared_storage, [_forged(template, v=_vector(shorter))], caplog)


# --- recent hits -----------------------------------------------------------------------------


def test_recent_semantic_hits_are_inspectable_from_any_cache_object(
    shared_storage: dict[str, Any]
) -> None:
    upstream = Upstream()
    with Cache("recent", semantic=bow_options(), **shared_storage) as a, \
            Cache("recent", semantic=bow_options(), **shared_storage) as b:
        generate = generator(a, upstream)
        original = generate(prompt=FOX)
        assert a.recent_semantic_hits() == []
        assert generate(prompt=FOX_AGAIN) == original
        hits = a.recent_semantic_hits()
        assert len(hits) == 1
        hit = hits[0]
        assert hit["query"] == normalize_prompt(FOX_AGAIN)
        assert hit["matched"] == normalize_prompt(FOX)
        assert 0.7 <= hit["similarity"] <= 1.0001
        assert isinstance(hit["verdict"], str) and hit["verdict"]
        assert b.recent_semantic_hits() == hits
        assert generate(prompt=FOX_ONCE_MORE) == original
        newest = b.recent_semantic_hits()
        assert len(newest) == 2 and newest[0]["query"] == normalize_prompt(FOX_ONCE_MORE)


# --- bad input and broken embedders ------------------------------------------------------------


BAD_PROMPTS = [
    "",
    "   ",
    "\t\n ",
    "a red fox in snow " * 5556,  # 100,008 characters
    "a red fox in snow " * 5555 + "at night",
    "一只在雪地里的红狐狸",
    "一只在雪地里的蓝狐狸",
    "ثعلب أحمر في الثلج",
    "ثعلب أزرق في الثلج",
    "🦊❄️🌙",
    "🦊❄️",
    "a red fox 🦊 in 雪, ثعلب",
    "a red fox 🦊 in 雪",
    "a cat 🐱",
    "a cat 🐶",
]


@pytest.mark.parametrize("max_prompt_chars", [None, 200_000], ids=["default", "long-prompts-embedded"])
def test_bad_input_never_crashes_and_never_gets_a_wrong_hit(
    model: Any, tmp_path: Path, max_prompt_chars: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    options = SemanticOptions() if max_prompt_chars is None else SemanticOptions(max_prompt_chars=max_prompt_chars)
    calls: list[str] = []
    with Cache("bad", directory=tmp_path, semantic=options) as cache:

        @cache.cached(name="gen")
        def generate(*, prompt: str) -> bytes:
            calls.append(prompt)
            return expected(normalize_prompt(prompt))

        with caplog.at_level(logging.WARNING, logger="imgcache"):
            for prompt in BAD_PROMPTS:
                assert generate(prompt=prompt) == expected(normalize_prompt(prompt)), prompt[:40]
            for prompt in BAD_PROMPTS:  # exact repeats hit
                assert generate(prompt=prompt) == expected(normalize_prompt(prompt)), prompt[:40]
        assert len(calls) == len({normalize_prompt(p) for p in BAD_PROMPTS})
        assert cache.stats()["by_match"]["semantic"] == 0
        assert semantic_failures(caplog) == []


def _raises(texts: list[str]) -> Any:
    raise RuntimeError("the embedding service is down")


@pytest.mark.parametrize("broken", [
    _raises,
    lambda texts: np.ones(8),  # one dimension
    lambda texts: np.zeros((0, 8)),  # no rows
    lambda texts: np.full((len(texts), 8), np.nan),
    lambda texts: "not an array",
], ids=["raises", "1-d", "no-rows", "nan", "not-an-array"])
def test_a_broken_embedder_costs_semantic_matching_only(tmp_path: Path, broken: Any) -> None:
    upstream = Upstream()
    with Cache("broken", directory=tmp_path, semantic=bow_options(broken)) as cache:
        generate = generator(cache, upstream)
        original = generate(prompt=FOX)
        assert generate(prompt=FOX) == original
        assert generate(prompt=FOX_AGAIN) == expected(FOX_AGAIN)
        assert generate(prompt=FOX_AGAIN) == expected(FOX_AGAIN)
        assert upstream.prompts == [FOX, FOX_AGAIN]
        stats = cache.stats()
        assert stats["by_match"] == {**stats["by_match"], "exact": 2, "semantic": 0}
