"""Hostile input and results, through the real entry points.

* A request the cache cannot key (a prompt that is not valid Unicode, parameters nested too
  deep or in a cycle, an integer too large for JSON consumers) raises InvalidRequest from
  ``Request.build``, the decorator (sync and async) and ``wrap()``, before anything is sent
  upstream.
* A result the cache cannot store is returned to its caller unchanged and uncached, with an
  UncachedResultWarning, counted ``uncacheable``; the next call goes upstream again.
* The decorator's memo of built requests is bounded by entry count and by the bytes it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

import imgcache
from imgcache import Cache, CorruptData, InvalidRequest, UncachedResultWarning, codec
from imgcache._limits import MAX_DEPTH, MAX_INT
from imgcache._memo import ENTRY_OVERHEAD, MISSING, BoundedMemo
from imgcache.adapters.decorator import MEMO_BYTES, MEMO_ITEMS
from imgcache.images import data_url
from imgcache.request import Request
from imgcache.testing import FakeOpenAI, fake_png

from _helpers import Upstream

pytestmark = pytest.mark.cache_options("hostile-input", semantic=False)

DEEP = "nested deeper than 64"
NOT_UNICODE = "not valid Unicode: a lone surrogate"
HUGE = r"an integer of about 5001 digits; integers must be under 10\*\*100"


def nested(depth: int, kind: type = dict) -> Any:
    """``depth`` levels of dicts (``{"a": {"a": ... 0}}``) or of lists (``[[...[0]...]]``)."""
    value: Any = 0
    for _ in range(depth):
        value = {"a": value} if kind is dict else [value]
    return value


def cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


# id: (prompt, parameters, what the error says)
HOSTILE_REQUESTS = {
    "surrogate-prompt": ("a cat \ud800", {}, f"prompt: {NOT_UNICODE}"),
    "surrogate-value": ("a cat", {"style": "vivid \udfff"}, f"params.style: {NOT_UNICODE}"),
    "surrogate-key": ("a cat", {"extra": {"\ud800": 1}}, f"params.extra: a key: {NOT_UNICODE}"),
    "huge-int": ("a cat", {"n": 10**5000}, f"params.n: {HUGE}"),
    "deep-dicts": ("a cat", {"extra": nested(500, dict)}, DEEP),
    "deep-lists": ("a cat", {"extra": nested(500, list)}, DEEP),
    "cycle": ("a cat", {"extra": cycle()}, DEEP),
}
REQUEST_CASES = [pytest.param(*case, id=name) for name, case in HOSTILE_REQUESTS.items()]

# id: (a function making the result, what the warning says)
HOSTILE_RESULTS: dict[str, tuple[Callable[[], Any], str]] = {
    "deep-dicts": (lambda: nested(500, dict), DEEP),
    "deep-lists": (lambda: nested(500, list), DEEP),
    "cycle": (cycle, DEEP),
    "huge-int": (lambda: {"image": b"png", "seed": 10**5000}, f"result.seed: {HUGE}"),
    "surrogate-str": (lambda: "a cat \ud800", f"result: {NOT_UNICODE}"),
    "surrogate-value": (lambda: {"image": b"png", "caption": "a cat \ud800"}, f"result.caption: {NOT_UNICODE}"),
    "surrogate-key": (lambda: {"\ud800": b"png"}, f"result: a key: {NOT_UNICODE}"),
}
RESULT_CASES = [pytest.param(*case, id=name) for name, case in HOSTILE_RESULTS.items()]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompts of every Request.build call (a memo hit builds nothing)."""
    prompts: list[str] = []
    original = Request.build

    def counting_build(cls: type[Request], kind: str, operation: str, prompt: Any, *args: Any) -> Request:
        prompts.append(prompt)
        return original(kind, operation, prompt, *args)

    monkeypatch.setattr(Request, "build", classmethod(counting_build))
    return prompts


def counts(cache: Cache) -> dict[str, float]:
    stats = cache.stats()
    return {name: stats.get(name, 0) for name in ("requests", "upstream_calls", "uncacheable", "stored", "hits")}


def sdk_kwargs(params: dict[str, Any], arguments: tuple[str, ...]) -> dict[str, Any]:
    """The SDK call of ``params``: ``arguments`` as keyword arguments, the rest as body fields."""
    kwargs = {k: v for k, v in params.items() if k in arguments}
    extra = {k: v for k, v in params.items() if k not in arguments}
    return {**kwargs, "extra_body": extra} if extra else kwargs


# --- 1. requests that cannot be keyed: InvalidRequest, before any upstream call ---------------


@pytest.mark.parametrize(("prompt", "params", "message"), REQUEST_CASES)
def test_request_build_refuses_with_a_typed_error(prompt: str, params: dict[str, Any], message: str) -> None:
    for kind in ("generation", "vision"):
        with pytest.raises(InvalidRequest, match=message):
            Request.build(kind, "test.op", prompt, params)


@pytest.mark.parametrize(("prompt", "params", "message"), REQUEST_CASES)
def test_decorator_refuses_before_calling_the_function(
    cache: Cache, prompt: str, params: dict[str, Any], message: str
) -> None:
    upstream = Upstream.returning(b"image")

    @cache.cached()
    def generate(*, prompt: str, model: str = "dall-e-3", **params: Any) -> bytes:
        return upstream()

    @cache.cached(name="positional")
    def positional(prompt: str, model: str = "dall-e-3", **params: Any) -> bytes:
        return upstream()

    for call in (
        lambda: generate(prompt=prompt, **params),  # the memoized keyword path
        lambda: positional(prompt, **params),  # the bound-arguments path
        lambda: generate.cache_key(prompt=prompt, **params),
        lambda: generate.invalidate(prompt=prompt, **params),
    ):
        with pytest.raises(InvalidRequest, match=message):
            call()
    assert upstream.calls == 0
    assert len(generate.memo) == 0
    assert counts(cache) == {"requests": 0, "upstream_calls": 0, "uncacheable": 0, "stored": 0, "hits": 0}


@pytest.mark.parametrize(("prompt", "params", "message"), REQUEST_CASES)
def test_async_decorator_refuses_before_calling_the_function(
    cache: Cache, prompt: str, params: dict[str, Any], message: str
) -> None:
    upstream = Upstream.returning(b"image")

    @cache.cached()
    async def generate(*, prompt: str, model: str = "dall-e-3", **params: Any) -> bytes:
        return upstream()

    with pytest.raises(InvalidRequest, match=message):
        asyncio.run(generate(prompt=prompt, **params))
    assert upstream.calls == 0
    assert counts(cache)["requests"] == 0


@pytest.mark.parametrize(("prompt", "params", "message"), REQUEST_CASES)
def test_wrapped_images_generate_refuses_before_calling_the_api(
    cache: Cache, openai_client: openai.OpenAI, fake_openai: FakeOpenAI,
    prompt: str, params: dict[str, Any], message: str,
) -> None:
    client = imgcache.wrap(openai_client, cache=cache)
    kwargs = sdk_kwargs(params, ("n", "style"))
    with pytest.raises(InvalidRequest, match=message):
        client.images.generate(model="dall-e-3", prompt=prompt, response_format="b64_json", **kwargs)
    assert fake_openai.calls() == 0
    assert counts(cache)["requests"] == 0


@pytest.mark.parametrize(("prompt", "params", "message"), REQUEST_CASES)
def test_wrapped_async_images_generate_refuses_before_calling_the_api(
    cache: Cache, fake_openai: FakeOpenAI, prompt: str, params: dict[str, Any], message: str,
) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as sdk:
            client = imgcache.wrap(sdk, cache=cache)
            await client.images.generate(model="dall-e-3", prompt=prompt, **sdk_kwargs(params, ("n", "style")))

    with pytest.raises(InvalidRequest, match=message):
        asyncio.run(main())
    assert fake_openai.calls() == 0


@pytest.mark.parametrize(("prompt", "params", "message"), REQUEST_CASES)
def test_wrapped_chat_completion_with_an_image_refuses_before_calling_the_api(
    cache: Cache, openai_client: openai.OpenAI, fake_openai: FakeOpenAI,
    prompt: str, params: dict[str, Any], message: str,
) -> None:
    client = imgcache.wrap(openai_client, cache=cache)
    image = {"type": "image_url", "image_url": {"url": data_url(fake_png(8, 8, "hostile"))}}
    messages = [{"role": "user", "content": [{"type": "text", "text": prompt}, image]}]
    with pytest.raises(InvalidRequest):  # the conversation is a parameter too: its path differs
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, **sdk_kwargs(params, ("n",)))
    assert fake_openai.calls() == 0
    assert counts(cache)["requests"] == 0


def test_the_limits_are_where_the_documentation_says(cache: Cache) -> None:
    """MAX_DEPTH levels (the parameters' own mapping counted) and |n| < MAX_INT are accepted;
    one more level or MAX_INT itself is not. A Python str holds code points: a surrogate
    pair written as two code points is two lone surrogates, not the character."""
    build = lambda prompt="a cat", **params: Request.build("generation", "op", prompt, params)
    build(extra=nested(MAX_DEPTH - 1, list), seed=MAX_INT - 1, low=-(MAX_INT - 1))
    build(extra=nested(MAX_DEPTH - 1, dict))
    build("a cat \U0001f431 caf\u00e9")
    with pytest.raises(InvalidRequest, match=DEEP):
        build(extra=nested(MAX_DEPTH, list))
    with pytest.raises(InvalidRequest, match=DEEP):
        build(extra=nested(MAX_DEPTH, dict))
    for n in (MAX_INT, -MAX_INT):
        with pytest.raises(InvalidRequest, match="must be under 10"):
            build(seed=n)
    with pytest.raises(InvalidRequest, match=NOT_UNICODE):
        build("a cat \ud83d\udc31")


def test_the_largest_accepted_request_and_result_are_stored_and_hit(cache: Cache) -> None:
    """Whatever passes the limits goes through the whole store path (the entry manifest holds
    the parameters) and comes back equal."""
    result = {"deep": nested(MAX_DEPTH - 1, dict), "big": MAX_INT - 1, "small": -(MAX_INT - 1),
              "caption": "a cat \U0001f431", "image": b"png"}
    upstream = Upstream.returning(result)

    @cache.cached()
    def generate(*, prompt: str, extra: Any, seed: int) -> Any:
        return upstream()

    args = {"prompt": "a cat \U0001f431", "extra": nested(MAX_DEPTH - 1, list), "seed": MAX_INT - 1}
    assert generate(**args) == result
    assert generate(**args) == result
    assert upstream.calls == 1
    assert counts(cache) == {"requests": 2, "upstream_calls": 1, "uncacheable": 0, "stored": 1, "hits": 1}


# --- 1. results that cannot be stored: returned uncached, never lost ----------------------------


@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize(("make", "message"), RESULT_CASES)
def test_unstorable_result_is_returned_with_a_warning_and_asked_again(
    cache: Cache, caplog: pytest.LogCaptureFixture, make: Callable[[], Any], message: str, how: str
) -> None:
    result = make()
    upstream = Upstream.returning(result)

    @cache.cached()
    def generate(*, prompt: str) -> Any:
        return upstream()

    @cache.cached()
    async def agenerate(*, prompt: str) -> Any:
        return upstream()

    def ask() -> Any:
        return generate(prompt="a cat") if how == "sync" else asyncio.run(agenerate(prompt="a cat"))

    for call in (1, 2):
        with pytest.warns(UncachedResultWarning, match=message):
            assert ask() is result
        assert upstream.calls == call
    assert counts(cache) == {"requests": 2, "upstream_calls": 2, "uncacheable": 2, "stored": 0, "hits": 0}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # refused by the codec


def test_a_failure_after_the_upstream_call_returns_the_paid_result(cache: Cache) -> None:
    """An unexpected error while making the result storable (here a to_storable that raises
    ValueError) costs the entry, never the result."""
    request = Request.build("generation", "op", "a cat", {})
    upstream = Upstream.returning(b"image")

    def broken(result: bytes) -> Any:
        raise ValueError("a bug")

    with pytest.warns(UncachedResultWarning, match="storing it failed: ValueError"):
        assert cache.fetch(request, upstream, to_storable=broken) == b"image"
    assert counts(cache)["uncacheable"] == 1 and counts(cache)["stored"] == 0


@pytest.mark.parametrize("cost", [10**5000, "0.04", float("nan"), float("inf")],
                         ids=["huge-int", "str", "nan", "inf"])
def test_a_pricing_function_answering_nonsense_costs_the_figure_only(cache: Cache, cost: Any) -> None:
    upstream = Upstream.returning(b"image")

    @cache.cached(cost_usd=lambda params: cost)
    def generate(*, prompt: str) -> bytes:
        return upstream()

    assert generate(prompt="a cat") == b"image"
    assert generate(prompt="a cat") == b"image"
    assert upstream.calls == 1
    stats = cache.stats()
    assert stats["stored"] == 1 and stats["hits"] == 1
    assert stats.get("spent_usd", 0) == 0 and stats.get("saved_usd", 0) == 0


def test_a_stored_body_nested_beyond_the_stack_is_corrupt_data() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(CorruptData):
        codec.decode({"type": "json", "body": codec.digest(body), "blobs": []}, {codec.digest(body): body})


# --- 2. the decorator's memo: bounded by count and by bytes ----------------------------------


def test_bounded_memo_is_an_lru_bounded_by_count_and_bytes() -> None:
    memo: BoundedMemo[Any] = BoundedMemo(max_items=3, max_bytes=16 * (1000 + ENTRY_OVERHEAD))
    for key in "abc":
        assert memo.put(key, key.upper(), 10)
    assert memo.get("a") == "A"  # a is now the most recently used
    memo.put("d", "D", 10)
    assert "b" not in memo and [k for k in "acd" if k in memo] == ["a", "c", "d"]
    assert memo.size_bytes == 3 * (10 + ENTRY_OVERHEAD)

    memo.put("a", "A2", 500)  # replacing an entry replaces its size
    assert memo.get("a") == "A2" and memo.size_bytes == 2 * (10 + ENTRY_OVERHEAD) + 500 + ENTRY_OVERHEAD

    assert not memo.put("huge", "H", 1001)  # over max_entry_bytes (a sixteenth): not kept
    assert "huge" not in memo and memo.get("a") == "A2"
    assert not memo.put("a", "A3", 1001) and "a" not in memo  # nor an older value under its key
    assert memo.size_bytes == 2 * (10 + ENTRY_OVERHEAD)

    by_bytes: BoundedMemo[int] = BoundedMemo(max_items=1000, max_bytes=10_000, max_entry_bytes=10_000)
    for i in range(100):
        by_bytes.put(i, i, 1000)
        assert by_bytes.size_bytes <= 10_000
    assert len(by_bytes) == 10_000 // (1000 + ENTRY_OVERHEAD) and 99 in by_bytes and 0 not in by_bytes

    nones: BoundedMemo[None] = BoundedMemo(max_items=2, max_bytes=10_000)
    nones.put(b"not json", None, 8)
    assert nones.get(b"not json", MISSING) is None and nones.get(b"other", MISSING) is MISSING


def test_bounded_memo_keeps_its_accounts_under_threads() -> None:
    memo: BoundedMemo[int] = BoundedMemo(max_items=50, max_bytes=40_000)

    def work(seed: int) -> None:
        for i in range(5_000):
            key = (seed * 7 + i) % 200
            if memo.get(key) is None:
                memo.put(key, key, key * 10)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(memo) <= 50 and memo.size_bytes <= 40_000
    assert memo.size_bytes == sum(key * 10 + ENTRY_OVERHEAD for key in range(200) if key in memo)


def test_repeated_small_calls_hit_the_memo(cache: Cache, built: list[str]) -> None:
    upstream = Upstream.returning(b"image")

    @cache.cached()
    def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
        return upstream()

    for _ in range(5):
        assert generate(prompt="a red fox", model="dall-e-3") == b"image"
    assert built == ["a red fox"] and upstream.calls == 1 and len(generate.memo) == 1

    for i in range(MEMO_ITEMS + 100):  # the count bound: the oldest go, the newest stay
        generate.cache_key(prompt=f"fox {i}")
    assert len(generate.memo) == MEMO_ITEMS and generate.memo.size_bytes <= MEMO_BYTES
    built.clear()
    generate.cache_key(prompt=f"fox {MEMO_ITEMS + 99}")
    generate.cache_key(prompt="fox 0")
    assert built == ["fox 0"]


@pytest.mark.slow  # seconds
def test_memo_stays_under_its_byte_bound_with_long_prompts(tmp_path: Path, built: list[str]) -> None:
    """2,000 calls with distinct 100,000-character prompts: before, the memo kept every one
    (two copies of the prompt each, ~400 MB); now it holds what fits in MEMO_BYTES."""
    directory = tmp_path / "cache"
    with Cache("long-prompts", directory=directory, semantic=False, memory_bytes=16 << 20) as cache:
        upstream = Upstream.returning(b"image")

        @cache.cached()
        def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
            return upstream()

        body = "fox" * 33_334
        for i in range(2_000):
            generate(prompt=f"{i:05d} {body}")
            assert generate.memo.size_bytes <= MEMO_BYTES
        assert upstream.calls == 2_000
        held = len(generate.memo)
        assert 10 <= held <= 30  # long prompts are kept...
        assert generate.memo.size_bytes >= held * 300_000  # ...each counted as its three copies
        built.clear()
        assert generate(prompt=f"01999 {body}") == b"image"  # the latest: a memo hit, then a cache hit
        assert built == [] and upstream.calls == 2_000
    shutil.rmtree(directory)  # ~200 MB of entries


RSS_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from imgcache import Cache

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    cache = Cache("rss", directory=sys.argv[1], semantic=False, memory_bytes=0)

    @cache.cached()
    def generate(*, prompt, model="dall-e-3"):
        return b"image"

    body = "fox" * 33_334
    for i in range(100):  # warm up: imports, allocator, the memo's first fill
        generate(prompt=f"{i:06d} {body}")
    before = rss()
    calls, deadline = 0, time.monotonic() + float(sys.argv[2])
    while calls < 2_000 and time.monotonic() < deadline:
        generate(prompt=f"{100 + calls:06d} {body}")
        calls += 1
    print(json.dumps({"calls": calls, "growth": rss() - before,
                      "memo_bytes": generate.memo.size_bytes, "memo_items": len(generate.memo)}))
    cache.close()
""")


@pytest.mark.slow  # a process, seconds
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_rss_stays_bounded_under_long_prompts(tmp_path: Path) -> None:
    """In a fresh process, calls with distinct 100,000-character prompts for a few seconds:
    an unbounded memo grows ~200 KB a call (300 calls: 60 MB); the bounded one, not at all."""
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "cache"), "4"],
                         capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(out.stdout)
    assert figures["calls"] >= 300, figures
    assert figures["memo_bytes"] <= MEMO_BYTES, figures
    assert figures["growth"] < 32 << 20, figures
