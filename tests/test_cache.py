"""The cache front on the embedded default (memory plus a local directory) through the decorator."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from _helpers import Upstream

import imgcache
from imgcache import Cache, ConfigError, InvalidRequest, UncachedResultWarning


def fresh(n: int, prompt: str, **params: object) -> bytes:
    """The answer of an upstream whose every result is new: call ``n``'s."""
    return f"image #{n} for {prompt} {sorted(params.items())}".encode()


def new_upstream() -> Upstream:
    """A stand-in for a paid API: counts calls and returns a distinct result each time."""
    return Upstream(fresh, numbered=True)


def test_repeat_and_surface_variants_hit(cache: Cache) -> None:
    upstream = new_upstream()

    @cache.cached()
    def generate(*, prompt: str, model: str = "m1", size: str = "1024x1024") -> bytes:
        return upstream(prompt, model=model, size=size)

    first = generate(prompt="A red fox in snow.")
    assert generate(prompt="a red fox in snow") == first
    assert generate(prompt="  A RED  FOX IN SNOW ", size="1024x1024") == first  # explicit default
    assert upstream.calls == 1
    assert generate(prompt="a red fox in snow", size="512x512") != first
    assert generate(prompt="a blue fox in snow") != first
    assert upstream.calls == 3
    stats = cache.stats()
    assert (stats["requests"], stats["hits"], stats["misses"], stats["upstream_calls"]) == (5, 2, 3, 3)
    assert stats["by_tier"]["memory"] == 2 and stats["by_match"]["exact"] == 2


def test_positional_arguments_bind_to_names(cache: Cache) -> None:
    upstream = new_upstream()

    @cache.cached()
    def generate(prompt: str, model: str = "m") -> bytes:
        return upstream(prompt, model=model)

    assert generate("a fox", "m") == generate(prompt="a fox") == generate("A fox.", model="m")
    assert upstream.calls == 1


def test_results_round_trip_faithfully(cache: Cache) -> None:
    results = {
        "bytes": b"\x00\xff" * 100,
        "text": "héllo \u2603",
        "json": {"images": [b"\x89PNG...", b""], "meta": {"n": 2, "ok": True, "score": 0.5, "none": None}},
        "list": [1, "two", [3.25]],
    }

    @cache.cached()
    def generate(*, prompt: str) -> object:
        return results[prompt]

    for name, value in results.items():
        assert generate(prompt=name) == value
    cache.store.memory.clear()  # memory: force the disk tier to answer
    for name, value in results.items():
        got = generate(prompt=name)
        assert got == value and type(got) is type(value)
    assert cache.stats()["by_tier"]["disk"] == len(results)


def test_returned_json_is_a_fresh_copy(cache: Cache) -> None:
    @cache.cached()
    def generate(*, prompt: str) -> dict:
        return {"tags": ["a"]}

    generate(prompt="p")
    generate(prompt="p")["tags"].append("mutated")
    assert generate(prompt="p") == {"tags": ["a"]}


@pytest.mark.parametrize("result", [(1, 2), {1: "a"}, object(), float("inf"), {"$blob": "x"}])
def test_unstorable_results_are_returned_uncached_with_a_warning(cache: Cache, result: object) -> None:
    upstream = new_upstream()

    @cache.cached()
    def generate(*, prompt: str) -> object:
        upstream(prompt)
        return result

    with pytest.warns(UncachedResultWarning):
        assert generate(prompt="p") is result
    with pytest.warns(UncachedResultWarning):
        generate(prompt="p")
    assert upstream.calls == 2
    assert cache.stats()["uncacheable"] == 2 and cache.stats()["stored"] == 0


def test_bad_requests_raise_typed_errors_and_store_nothing(cache: Cache) -> None:
    upstream = new_upstream()

    @cache.cached()
    def generate(*, prompt: object = None, extra: object = None) -> bytes:
        return upstream(str(prompt))

    with pytest.raises(InvalidRequest):
        generate()
    with pytest.raises(InvalidRequest):
        generate(prompt=12)
    with pytest.raises(InvalidRequest):
        generate(prompt="p", extra=object())
    with pytest.raises(InvalidRequest):
        generate(prompt="p", extra={"k": {1, 2}})
    assert upstream.calls == 0 and cache.stats()["stored"] == 0


def test_upstream_errors_propagate_unchanged_and_are_not_cached(cache: Cache) -> None:
    class RateLimited(Exception):
        pass

    failures = [RateLimited("429")]
    upstream = new_upstream()

    @cache.cached()
    def generate(*, prompt: str) -> bytes:
        if failures:
            raise failures.pop()
        return upstream(prompt)

    with pytest.raises(RateLimited, match="429"):
        generate(prompt="p")
    assert generate(prompt="p") == b"image #1 for p []"
    assert cache.stats()["upstream_errors"] == 1


@pytest.mark.slow  # a default Cache: loads the sentence-transformers model
def test_entries_persist_across_cache_objects(tmp_path: Path) -> None:
    upstream = new_upstream()

    def make(cache: Cache):
        @cache.cached(name="gen")
        def generate(*, prompt: str) -> bytes:
            return upstream(prompt)

        return generate

    with Cache("persist", directory=tmp_path) as first:
        value = make(first)(prompt="a fox")
    with Cache("persist", directory=tmp_path) as second:
        assert make(second)(prompt="a fox") == value
        assert second.stats()["by_tier"]["disk"] == 1
    assert upstream.calls == 1


@pytest.mark.slow  # a default Cache: loads the sentence-transformers model
def test_namespaces_never_see_each_other(tmp_path: Path) -> None:
    upstream = new_upstream()
    with Cache("tenant-a", directory=tmp_path) as a, Cache("tenant-b", directory=tmp_path) as b:
        gen_a = a.cached(name="gen")(lambda *, prompt: upstream(prompt))
        gen_b = b.cached(name="gen")(lambda *, prompt: upstream(prompt))
        assert gen_a(prompt="p") != gen_b(prompt="p")
        assert upstream.calls == 2


def test_functions_do_not_share_entries_unless_named_alike(cache: Cache) -> None:
    @cache.cached()
    def thumbnail(*, prompt: str) -> str:
        return "thumb"

    @cache.cached()
    def poster(*, prompt: str) -> str:
        return "poster"

    assert (thumbnail(prompt="p"), poster(prompt="p")) == ("thumb", "poster")


def test_invalidate_and_cache_key(cache: Cache) -> None:
    upstream = new_upstream()

    @cache.cached()
    def generate(*, prompt: str) -> bytes:
        return upstream(prompt)

    assert generate.cache_key(prompt="A fox.") == generate.cache_key(prompt="a fox")
    generate(prompt="a fox")
    generate.invalidate(prompt="a fox")
    generate(prompt="a fox")
    assert upstream.calls == 2


@pytest.mark.slow  # a default Cache: loads the sentence-transformers model
def test_ttl_expires_entries_and_hits_extend_them(tmp_path: Path) -> None:
    upstream = new_upstream()
    # A TTL long against scheduling stalls on a loaded machine: "kept" is lost only if the
    # loop below stalls for over a second between two hits.
    with Cache("ttl", directory=tmp_path, ttl=2.0) as cache:
        generate = cache.cached()(lambda *, prompt: upstream(prompt))
        generate(prompt="kept")
        generate(prompt="dropped")
        # Hit "kept" in the second half of each lifetime: it outlives its first TTL.
        deadline = time.time() + 4.5
        while time.time() < deadline:
            time.sleep(0.2)
            generate(prompt="kept")
        calls = upstream.calls
        generate(prompt="kept")
        assert upstream.calls == calls == 2, "a kept-alive entry should still be cached"
        generate(prompt="dropped")
        assert upstream.calls == 3, "an entry past its TTL must be a miss"


@pytest.mark.slow  # a default Cache: loads the sentence-transformers model
def test_ttl_extension_is_capped(tmp_path: Path) -> None:
    upstream = new_upstream()
    with Cache("cap", directory=tmp_path, ttl=0.1) as cache:  # cap: 8 x 0.1 s
        generate = cache.cached()(lambda *, prompt: upstream(prompt))
        generate(prompt="p")
        deadline = time.time() + 2.0
        while time.time() < deadline and upstream.calls == 1:
            time.sleep(0.02)
            generate(prompt="p")
        assert upstream.calls == 2, "hits must not keep an entry alive past the cap"


@pytest.mark.slow  # a default Cache: loads the sentence-transformers model
def test_memory_tier_is_bounded_by_bytes(tmp_path: Path) -> None:
    with Cache("mem", directory=tmp_path, memory_bytes=64 * 1024) as cache:
        generate = cache.cached()(lambda *, prompt: prompt.encode() * 2000)
        for i in range(50):
            generate(prompt=f"p{i}")
        memory = cache.store.memory
        assert memory.size_bytes <= 64 * 1024
        assert generate(prompt="p0") == b"p0" * 2000  # evicted from memory, still on disk


def test_async_functions_are_cached(cache: Cache) -> None:
    upstream = new_upstream()

    @cache.cached()
    async def generate(*, prompt: str) -> bytes:
        await asyncio.sleep(0.05)
        return upstream(prompt)

    async def main() -> list[bytes]:
        results = await asyncio.gather(*(generate(prompt="A fox") for _ in range(8)))
        results.append(await generate(prompt="a fox."))
        return results

    results = asyncio.run(main())
    assert len(set(results)) == 1 and upstream.calls == 1
    assert cache.stats()["coalesced"] == 7


def test_concurrent_threads_make_one_upstream_call(cache: Cache) -> None:
    upstream = new_upstream()
    started = threading.Barrier(8)

    @cache.cached()
    def generate(*, prompt: str) -> bytes:
        time.sleep(0.2)
        return upstream(prompt)

    results: list[bytes] = []

    def worker() -> None:
        started.wait()
        results.append(generate(prompt="same prompt"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert upstream.calls == 1 and len(set(results)) == 1 and len(results) == 8


def test_followers_share_the_leaders_error(cache: Cache) -> None:
    class Boom(Exception):
        pass

    gate = threading.Event()

    @cache.cached()
    def generate(*, prompt: str) -> bytes:
        gate.wait(5)
        raise Boom()

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            generate(prompt="p")
        except Boom as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert cache.stats()["upstream_calls"] == 1


def test_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMGCACHE_NAMESPACE", "envns")
    monkeypatch.setenv("IMGCACHE_DIR", str(tmp_path))
    monkeypatch.setenv("IMGCACHE_MEMORY_BYTES", "16MiB")
    monkeypatch.setenv("IMGCACHE_TTL", "7d")
    with Cache.from_env() as cache:
        assert cache.namespace == "envns" and cache.ttl == 7 * 86400
        assert cache.store.memory.max_bytes == 16 << 20
        assert cache.store.tier_names == ["memory", "disk"]
    monkeypatch.setenv("IMGCACHE_TTL", "soon")
    with pytest.raises(ConfigError):
        Cache.from_env()


@pytest.mark.parametrize("namespace", ["", "a/b", "x" * 65, "bad name", "../up", None])
def test_bad_namespaces_are_refused(namespace: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Cache(namespace, directory=tmp_path)  # type: ignore[arg-type]


PUBLIC = {
    "Budget", "BudgetExceeded", "Cache", "ConfigError", "CorruptData", "FetchPolicy", "ImageError", "ImgcacheError", "InvalidRequest",
    "RateLimited", "RateLimits", "Request", "SemanticOptions", "SourceRefused", "TierError", "TierTimeout", "TierUnavailable",
    "UncachedResultWarning", "UnstorableResult", "VisionOptions", "__version__", "normalize_prompt", "wrap",
}
"""The package's public names: changing them is a decision, made here and in the README."""


def test_public_surface_is_pinned() -> None:
    assert set(imgcache.__all__) == PUBLIC and len(imgcache.__all__) == len(PUBLIC)
    for name in PUBLIC - {"__version__"}:
        value = getattr(imgcache, name)
        assert value.__module__.startswith("imgcache."), name
        assert not value.__module__.split(".")[-1].startswith("_"), f"{name} comes from a private module"
    with pytest.raises(AttributeError):
        imgcache.TieredStore  # noqa: B018 - internal names are not reachable from the package


def test_every_exception_is_under_the_error_root() -> None:
    """Every exception class of the library (the fake servers of imgcache.testing aside) is an
    ImgcacheError, except three internal ones that never leave their module's caller."""
    import importlib
    import pkgutil

    internal = {"imgcache._files.NotAFile": OSError,  # the disk tier turns it into TierError
                "imgcache.match.optional.Unavailable": ImportError,  # the optional-deps probe's
                "imgcache.match.semantic.sentence.Unsure": Exception}  # caught in scene(): "no verdict"
    found = []
    for info in pkgutil.walk_packages(imgcache.__path__, "imgcache."):
        if info.name.startswith("imgcache.testing") or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == info.name and not issubclass(value, Warning)):
                found.append(value)
                name = f"{value.__module__}.{value.__qualname__}"
                assert issubclass(value, internal.get(name, imgcache.ImgcacheError)), name
    assert len(found) >= 15  # the walk saw the library, not an empty package


def test_import_does_not_load_heavy_modules() -> None:
    import subprocess
    import sys

    code = "import sys, imgcache; imgcache.Cache; print(sorted(m for m in ('torch','sentence_transformers','openai','boto3','redis') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_argument_types_are_never_conflated(cache: Cache) -> None:
    @cache.cached()
    def generate(*, prompt: str, flag: object = None) -> str:
        return repr(flag)

    assert generate(prompt="p", flag=1) == "1"
    assert generate(prompt="p", flag=True) == "True"
    assert generate(prompt="p", flag=1.0) == "1"  # 1.0 and 1 are one canonical value
    assert generate(prompt="p", flag="1") == "'1'"


def test_invalidation_reaches_another_cache_serving_from_memory_on_an_event_loop(tmp_path: Path) -> None:
    """``b`` answers from its memory tier on the event loop, where it does no I/O: it learns
    ``a``'s invalidation from its background thread, within its stats interval."""
    upstream = new_upstream()
    with Cache("inv", directory=tmp_path, semantic=False, stats_interval=0.05) as a, \
            Cache("inv", directory=tmp_path, semantic=False, stats_interval=0.05) as b:

        @a.cached(name="gen")
        def generate(*, prompt: str) -> bytes:
            return upstream(prompt)

        @b.cached(name="gen")
        async def agenerate(*, prompt: str) -> bytes:
            return upstream(prompt)

        first = generate(prompt="a red fox")
        assert asyncio.run(agenerate(prompt="a red fox")) == first  # read into b's memory
        assert asyncio.run(agenerate(prompt="a red fox")) == first
        assert b.stats()["by_tier"]["memory"] == 1
        generate.invalidate(prompt="a red fox")
        time.sleep(0.3)
        again = asyncio.run(agenerate(prompt="a red fox"))
        assert again != first and upstream.calls == 2
        assert generate(prompt="a red fox") == again
