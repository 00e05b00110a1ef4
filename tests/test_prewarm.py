"""The prewarm job (issue 5), against real components: the fake OpenAI server through the real
SDK, a real redis-server, the real CLI in subprocesses. The limiter's arithmetic runs on a fake
clock, so its schedule is checked exactly; nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import email.utils
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgcache import Cache, ConfigError, SemanticOptions, request_log, wrap
from imgcache.adapters.openai import GENERATE_OPERATION, image_params
from imgcache.match.semantic.embed import CallableEmbedder
from imgcache.prewarm import (
    InputProblem,
    PrewarmItem,
    from_history,
    prewarm,
    read_items,
    recent_runs,
)
from imgcache.prewarm.budget import Budget
from imgcache.prewarm.job import PrewarmJob
from imgcache.prewarm.upstream import OpenAIUpstream
from imgcache.request import Request
from imgcache.spend.limiter import LocalBuckets, RateLimiter, Rates, pause, reserve
from imgcache.spend.outcomes import Backoff, classify, retry_after
from imgcache.store.claims import FileClaims
from imgcache.testing import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
DALL_E_3 = {"model": "dall-e-3"}
GENERATIONS = "/v1/images/generations"


# --- helpers ---------------------------------------------------------------------------------


def generated(fake: FakeOpenAI) -> Counter[str]:
    """Prompts the fake server was asked to generate (failed attempts included), with counts."""
    return Counter(r.body["prompt"] for r in fake.requests
                   if r.path == GENERATIONS and isinstance(r.body, dict))


def request_for(prompt: str, **params: Any) -> Request:
    """The request a live ``wrap(client).images.generate(prompt=..., **params)`` is keyed by."""
    return Request.build("generation", GENERATE_OPERATION, prompt, image_params(params))


def cached(cache: Cache, prompt: str, **params: Any) -> bool:
    return cache.lookup(request_for(prompt, **params)) is not None


def job(cache: Cache, client: Any, **options: Any) -> PrewarmJob:
    """A job with fast back-off (its arithmetic is tested on its own)."""
    options.setdefault("backoff", Backoff(base=0.02, cap=0.1))
    options.setdefault("semantic", False)
    return PrewarmJob(cache, OpenAIUpstream(cache, client=client), **options)


def run(cache: Cache, client: Any, entries: Any, *, params: dict[str, Any] | None = None, **options: Any):
    return job(cache, client, **options).run(read_items(entries, params=DALL_E_3 if params is None else params))


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    with Cache(directory=tmp_path / "cache", semantic=False) as cache:
        yield cache


@pytest.fixture(params=["redis", "directory"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """How caches (and worker processes) share entries, claims and the request log."""
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {"directory": tmp_path / "shared"}


# --- reading the input -------------------------------------------------------------------------


def problems(entries: list[Any]) -> list[tuple[int | None, str]]:
    return [(e.line, e.message) for e in entries if isinstance(e, InputProblem)]


def items(entries: list[Any]) -> list[tuple[int | None, str, dict[str, Any]]]:
    return [(e.line, e.prompt, dict(e.params)) for e in entries if isinstance(e, PrewarmItem)]


def test_text_input_gives_one_prompt_a_line_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbfa red fox\n\n  a blue fox  \r\nbad \xff byte\n{\"looks\": \"like json\"}\n")
    entries = list(read_items(path, params=DALL_E_3))

    assert items(entries) == [(1, "a red fox", DALL_E_3), (3, "a blue fox", DALL_E_3),
                              (5, '{"looks": "like json"}', DALL_E_3)]  # .txt: text, whatever it holds
    assert [(line, message.split(" (")[0]) for line, message in problems(entries)] == [
        (2, "empty line"), (4, "not UTF-8 text")]
    assert str(entries[1]) == "prompts.txt:2: empty line"


def test_jsonl_lines_carry_their_own_parameters_and_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([
        '{"prompt": "a red fox", "size": "1792x1024"}',
        '{"prompt": "a cat", "model": "dall-e-2"',  # cut short
        '["a list"]',
        '{"size": "1024x1024"}',
        '{"prompt": "   "}',
        '{"prompt": "a dog", "quality": "hd"}',
    ]) + "\n")
    entries = list(read_items(path, params={"model": "dall-e-3", "size": "1024x1024"}))

    assert items(entries) == [
        (1, "a red fox", {"model": "dall-e-3", "size": "1792x1024"}),
        (6, "a dog", {"model": "dall-e-3", "size": "1024x1024", "quality": "hd"}),
    ]
    found = problems(entries)
    assert [line for line, _ in found] == [2, 3, 4, 5]
    assert found[0][1].startswith("not a JSON object:")
    assert found[2][1] == 'no "prompt" string' and found[3][1] == "empty prompt"


def test_csv_takes_the_prompt_column_and_image_parameter_columns(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text('sku,Prompt,size,n\n'
                    'A1,"white sneakers, side view",1024x1792,\n'
                    'A2,"a mug\nwith a cat",,1\n'
                    'A3,,1024x1024,1\n'
                    'A4,a lamp,,two\n'
                    'A5,a chair\n')
    entries = list(read_items(path, params=DALL_E_3))

    assert items(entries) == [
        (2, "white sneakers, side view", {"model": "dall-e-3", "size": "1024x1792"}),
        (3, "a mug\nwith a cat", {"model": "dall-e-3", "n": 1}),
        (7, "a chair", DALL_E_3),
    ]
    assert problems(entries) == [(1, "columns ignored (not image parameters): sku"), (5, "empty prompt"),
                                 (6, "column 'n': 'two' is not a whole number")]
    (tmp_path / "no-prompt.csv").write_text("sku,text\nA1,a fox\n")
    with pytest.raises(ConfigError, match="no 'prompt' column"):
        list(read_items(tmp_path / "no-prompt.csv"))
    with pytest.raises(ConfigError, match="cannot read"):
        list(read_items(tmp_path / "missing.txt"))


def test_standard_input_and_other_suffixes_are_sniffed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'\n{"prompt": "a fox"}\n{"prompt": 3}\n')))
    entries = list(read_items("-", params=DALL_E_3))
    assert items(entries) == [(2, "a fox", DALL_E_3)]
    assert problems(entries) == [(1, "empty line"), (3, '"prompt" is a int, not a string')]
    (tmp_path / "prompts").write_text("a fox, at dusk\n")
    assert items(list(read_items(tmp_path / "prompts"))) == [(1, "a fox, at dusk", {})]


# --- through the fake API ------------------------------------------------------------------------


def test_a_prewarmed_prompt_is_an_exact_hit_for_a_live_wrap_call(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    report = prewarm(["a red fox in snow", "white sneakers"], cache=cache, client=openai_client,
                     params={"model": "dall-e-3", "size": "1024x1024", "quality": "hd"}, semantic=False)
    assert (report.generated, report.calls, report.images, report.failed) == (2, 2, 2, 0)
    assert report.spent_usd == pytest.approx(0.16) and report.complete
    calls = fake_openai.calls()

    live = wrap(openai_client, cache)
    image = live.images.generate(model="dall-e-3", prompt="A red fox in snow.", quality="hd")
    assert image.data[0].url  # rebuilt in the format the live call asked for
    assert fake_openai.calls() == calls
    assert cache.stats()["hits"] == 1
    # The SDK's own retries were off: the job's limiter is the only retry logic.
    assert all(r.headers.get("x-stainless-retry-count") in (None, "0") for r in fake_openai.requests)


def test_duplicates_and_cached_prompts_cost_no_call(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    wrap(openai_client, cache).images.generate(model="dall-e-3", prompt="a blue fox")
    entries = ["a red fox", "A  red fox.", "a blue fox", "a red fox", "A BLUE FOX", "a green fox"]
    report = run(cache, openai_client, entries)

    assert (report.lines, report.duplicates, report.unique) == (6, 3, 3)
    assert (report.cached, report.generated, report.calls) == (1, 2, 2)
    assert generated(fake_openai) == Counter({"a blue fox": 1, "a red fox": 1, "a green fox": 1})
    again = run(cache, openai_client, entries)
    assert (again.cached, again.generated, again.calls) == (3, 0, 0)


def test_bad_lines_are_reported_with_their_line_and_the_rest_goes_on(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([
        '{"prompt": "a red fox"}',
        '',
        '{"prompt": "a cat",',
        json.dumps({"prompt": "x" * 100_000}),
        '{"prompt": "a dog", "model": "dall-e-4"}',
        '{"prompt": "a cow", "n": 2}',
        '{"prompt": "a hen", "sku": "A1"}',
        '{"prompt": "a pig", "size": "640x480"}',
        '{"prompt": "a blue fox"}',
    ]) + "\n")
    report = prewarm(path, cache=cache, client=openai_client, params=DALL_E_3, semantic=False)

    assert report.generated == 2 and sorted(generated(fake_openai)) == ["a blue fox", "a red fox"]
    messages = {p.line: p.message for p in report.problems}
    assert set(messages) == {2, 3, 4, 5, 6, 7, 8}
    assert messages[4] == "prompt of 100,000 characters: dall-e-3 takes at most 4,000"
    assert messages[5].startswith("unknown model 'dall-e-4'")
    assert messages[6] == "dall-e-3 makes one image a call: n must be 1"
    assert messages[7] == "unknown parameter 'sku'"
    assert messages[8] == "dall-e-3 has no size '640x480' (it has 1024x1024, 1024x1792, 1792x1024)"
    assert report.invalid == 6  # the empty line is reported, not counted against the run
    assert not report.complete


def test_429s_wait_for_retry_after_or_back_off_and_5xx_are_retried(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    fake_openai.fail_next(429, retry_after=0.2)
    fake_openai.fail_next(429)  # no Retry-After: exponential back-off with jitter
    fake_openai.fail_next(500, count=2)
    fake_openai.fail_next(503)
    report = run(cache, openai_client, ["a red fox", "a blue fox", "a green fox"], concurrency=1)

    assert report.generated == 3 and report.failed == 0
    assert (report.rate_limited, report.retries, report.calls) == (2, 5, 8)
    assert all(cached(cache, p, **DALL_E_3) for p in ["a red fox", "a blue fox", "a green fox"])


def test_5xx_retries_are_bounded_and_such_failures_are_tried_again_next_run(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    fake_openai.fail_next(500, count=3)
    report = run(cache, openai_client, ["a red fox"], retries=2)
    assert (report.failed, report.calls, report.retries) == (1, 3, 2)
    assert report.failures[0].reason.startswith("500")

    again = run(cache, openai_client, ["a red fox"], retries=2)
    assert (again.generated, again.refused_before) == (1, 0)


def test_content_policy_refusals_are_recorded_and_skipped_by_later_runs(
        shared: dict[str, Any], fake_openai: FakeOpenAI, openai_client: Any) -> None:
    fake_openai.fail_next(400, code="content_policy_violation")
    with Cache(semantic=False, **shared) as cache:
        report = run(cache, openai_client, ["a forbidden fox", "a red fox"], concurrency=1)
        assert (report.refused, report.generated, report.calls) == (1, 1, 2)
        assert "content_policy_violation" in report.failures[0].reason
        assert report.failures[0].where == "line 1"
    with Cache(semantic=False, **shared) as cache:  # another worker, or a later run
        again = run(cache, openai_client, ["a forbidden fox", "a red fox"])
        assert (again.refused_before, again.cached, again.calls) == (1, 1, 0)
        retried = run(cache, openai_client, ["a forbidden fox"], retry_refused=True)
        assert (retried.generated, retried.calls) == (1, 1)


def test_a_timed_out_call_is_retried_and_its_price_counts_as_maybe_billed(
        cache: Cache, fake_openai: FakeOpenAI) -> None:
    import openai

    fake_openai.latency = 0.6
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test", timeout=0.2) as client:
        report = run(cache, client, ["a slow fox"], retries=1)
    assert (report.failed, report.calls, report.generated) == (1, 2, 0)
    assert report.failures[0].reason.startswith("timed out")
    assert report.uncertain_usd == pytest.approx(0.08) and report.spent_usd == 0


def test_a_bad_api_key_stops_the_run(cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    fake_openai.fail_next(401)
    report = run(cache, openai_client, [f"fox {i}" for i in range(6)], concurrency=1)
    assert report.fatal is not None and report.fatal.startswith("401")
    assert report.calls == 1 and report.not_started == 5 and not report.complete


def test_the_budget_is_never_exceeded_by_concurrent_calls(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    fake_openai.latency = 0.05
    fake_openai.fail_next(400, code="content_policy_violation")  # gives its reservation back
    report = run(cache, openai_client, [f"fox number {i}" for i in range(20)], concurrency=8,
                 max_usd=0.04 * 5 + 0.01)
    assert report.generated == 5 and report.refused == 1 and report.over_budget == 14
    assert report.spent_usd == pytest.approx(0.20) and report.spent_usd <= 0.21
    assert sum(generated(fake_openai).values()) == 6


def test_budget_amounts_do_not_drift() -> None:
    budget = Budget(0.04 * 25)
    reservations = [budget.reserve(0.04) for _ in range(26)]
    assert reservations[-1] is None and all(r is not None for r in reservations[:-1])
    for reservation in reservations[:-1]:
        budget.settle(reservation, "spent")
    assert budget.spent_usd == 1.0
    assert Budget(1.0).reserve(None) is None and Budget(None).reserve(None) is not None
    with pytest.raises(ConfigError):
        Budget(-1)


def test_a_dry_run_counts_calls_and_dollars_and_calls_nothing(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    wrap(openai_client, cache).images.generate(model="dall-e-3", prompt="a blue fox", quality="hd")
    calls = fake_openai.calls()
    report = run(cache, openai_client, ["a red fox", "a blue fox", "a green fox", "a grey fox"],
                 params={"model": "dall-e-3", "quality": "hd"}, dry_run=True, max_usd=0.2)
    assert (report.would_generate, report.cached, report.over_budget) == (2, 1, 1)
    assert report.estimated_usd == pytest.approx(0.16)
    assert fake_openai.calls() == calls and report.generated == 0


def test_a_verified_semantic_match_is_skipped_and_becomes_an_exact_hit(
        tmp_path: Path, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    def bag_of_words(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % 64] += 1.0
        return out

    options = SemanticOptions(embedder=CallableEmbedder(bag_of_words, name="bow"))
    with Cache(directory=tmp_path, semantic=options) as cache:
        wrap(openai_client, cache).images.generate(model="dall-e-3", prompt="a red fox in snow")
        report = prewarm(["please draw a red fox in snow", "a red fox at night"], cache=cache,
                         client=openai_client, params=DALL_E_3)
        assert (report.semantic, report.generated) == (1, 1)
        assert cached(cache, "please draw a red fox in snow", **DALL_E_3)  # stored as an alias
        assert generated(fake_openai) == Counter({"a red fox in snow": 1, "a red fox at night": 1})


def test_a_scheduler_stops_a_run_with_an_event_and_the_next_run_repeats_nothing(
        cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    prompts = [f"template {i}" for i in range(12)]
    fake_openai.latency = 0.1
    stop = threading.Event()
    stopper = threading.Thread(target=lambda: (wait_for(lambda: fake_openai.calls() >= 3), stop.set()))
    stopper.start()
    report = prewarm(prompts, cache=cache, client=openai_client, params=DALL_E_3, concurrency=2,
                     semantic=False, stop=stop)
    stopper.join()
    assert report.interrupted and not report.abandoned and report.not_started > 0
    assert report.generated == report.calls == sum(generated(fake_openai).values())

    again = prewarm(prompts, cache=cache, client=openai_client, params=DALL_E_3, semantic=False)
    assert (again.cached, again.generated) == (report.generated, 12 - report.generated)
    assert generated(fake_openai) == Counter(prompts)


def test_a_custom_callable_is_an_upstream_too(cache: Cache, fake_openai: FakeOpenAI, openai_client: Any) -> None:
    asked: list[dict[str, Any]] = []

    def draw(**kwargs: Any) -> bytes:
        asked.append(kwargs)
        return b"\x89PNG fake bytes of " + kwargs["prompt"].encode()

    report = prewarm(["a red fox"], cache=cache, call=draw, params=DALL_E_3, semantic=False)
    assert report.generated == 1 and asked[0]["prompt"] == "a red fox"
    image = wrap(openai_client, cache).images.generate(model="dall-e-3", prompt="a red fox",
                                                       response_format="b64_json")
    assert image.data[0].b64_json and fake_openai.calls() == 0


# --- the request log and --from-history -----------------------------------------------------------


def test_the_request_log_ranks_missed_prompts_and_skips_cached_ones(
        shared: dict[str, Any], fake_openai: FakeOpenAI, openai_client: Any) -> None:
    with Cache(semantic=False, **shared) as cache:
        live = wrap(openai_client, cache)
        for prompt in ["a red fox", "a blue fox", "a green fox", "a red fox"]:
            live.images.generate(model="dall-e-3", prompt=prompt, size="1024x1792",
                                 user="someone", extra_headers={"Authorization": "Bearer sk-secret"})
            if prompt != "a green fox":  # expired, or evicted: missed again next time
                cache.delete(request_for(prompt, model="dall-e-3", size="1024x1792"))
        demand = cache.request_log.demand()
        # Most missed first; then most recently missed.
        assert [(d.prompt, d.misses) for d in demand] == [("a red fox", 2), ("a green fox", 1), ("a blue fox", 1)]
        assert demand[0].params == image_params({"model": "dall-e-3", "size": "1024x1792"})
        assert cache.request_log.demand(since=60, now=time.time() + 3600) == []

        top = from_history(cache, 5)  # a green fox is cached: nothing to warm
        assert [(i.prompt, i.line, i.source) for i in top] == [("a red fox", 1, "history"),
                                                               ("a blue fox", 3, "history")]  # by rank
        assert [i.prompt for i in from_history(cache, 1)] == ["a red fox"]
        assert from_history(cache, 5, matching={"size": "1024x1024"}) == []

        report = prewarm(top, cache=cache, client=openai_client, semantic=False)
        assert report.generated == 2
        assert cached(cache, "a blue fox", model="dall-e-3", size="1024x1792")
        assert [d.misses for d in cache.request_log.demand()] == [2, 1, 1]  # prewarm's calls: not logged
        assert from_history(cache, 5) == []
    for raw in cache.request_log.records():  # what the log holds: no keys, no headers, no user
        assert b"secret" not in raw and b"someone" not in raw


def test_the_local_request_log_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_log, "MAX_LOG_BYTES", 4096)
    with Cache(directory=tmp_path, semantic=False) as cache:
        @cache.cached(name="draw")
        def draw(*, prompt: str) -> bytes:
            return prompt.encode()

        for i in range(200):
            draw(prompt=f"prompt number {i} " + "x" * 40)
        log_file = tmp_path / "default" / "requests.log"
        assert log_file.stat().st_size <= 4096 + 200
        kept = cache.request_log.demand()
        assert kept and kept[-1].prompt.startswith("prompt number")
        assert all(json.loads(line) for line in log_file.read_bytes().splitlines())


# --- rate limits ----------------------------------------------------------------------------------


class FakeClock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        self.now += seconds


def schedule(limiter: RateLimiter, clock: FakeClock, calls: int, images: int = 1, scope: str = "m") -> list[float]:
    stop = threading.Event()
    times = []
    for _ in range(calls):
        assert limiter.acquire(scope, images, stop)
        times.append(round(clock.now, 9))
    return times


def test_the_token_bucket_lines_calls_up_at_the_rate_exactly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Rates.per_minute(60, None), LocalBuckets(clock), sleep=clock.sleep)
    assert schedule(limiter, clock, 5) == [0, 1, 2, 3, 4]
    assert schedule(limiter, clock, 1, scope="other model") == [4]  # limits are per model
    clock.now += 10  # idle: the bucket fills up to its burst (1), not more
    assert schedule(limiter, clock, 3) == [14, 15, 16]

    clock = FakeClock()
    burst = RateLimiter(Rates.per_minute(30, None, burst=3), LocalBuckets(clock), sleep=clock.sleep)
    assert schedule(burst, clock, 5) == [0, 0, 0, 2, 4]


def test_images_per_minute_count_every_image_of_a_call() -> None:
    clock = FakeClock()
    rates = Rates.per_minute(600, 120, images_per_request=4)
    limiter = RateLimiter(rates, LocalBuckets(clock), sleep=clock.sleep)
    assert schedule(limiter, clock, 4, images=4) == [0, 2, 4, 6]  # 2 images a second, 4 a call


def test_a_pause_holds_every_caller_then_resumes_at_the_rate_without_a_burst() -> None:
    clock = FakeClock()
    buckets = LocalBuckets(clock)
    limiter = RateLimiter(Rates.per_minute(60, None), buckets, sleep=clock.sleep)
    assert schedule(limiter, clock, 2) == [0, 1]
    limiter.pause("m", 5)  # a 429 at t=1 with Retry-After: 5
    assert schedule(limiter, clock, 3) == [6, 7, 8]

    # Callers that reserved before the pause queue again behind it (a new epoch).
    rates = Rates.per_minute(60, None)
    state, wait_a = reserve(None, 0.0, rates, 1, 1)
    state, wait_b = reserve(state, 0.0, rates, 1, 1)
    state, wait_c = reserve(state, 0.0, rates, 1, 1)
    assert (wait_a, wait_b, wait_c) == (0, 1, 2)
    state = pause(state, 0.5, rates, 3)
    assert state[3] == 1
    state, wait_b = reserve(state, 1.0, rates, 1, 1)  # b woke at 1, saw the new epoch
    state, wait_c = reserve(state, 2.0, rates, 1, 1)
    assert (1.0 + wait_b, 2.0 + wait_c) == (3.5, 4.5)


def test_a_stopped_acquire_returns_false_at_once() -> None:
    limiter = RateLimiter(Rates.per_minute(1, None))
    stop = threading.Event()
    assert limiter.acquire("m", 1, stop)
    stop.set()
    assert not limiter.acquire("m", 1, stop)


def test_buckets_in_redis_are_shared_by_every_worker(redis_url: str) -> None:
    from imgcache.store.redis import RedisTier

    rates = Rates.per_minute(60, None)
    first, second = (RedisTier(redis_url).rate_buckets("ns", "prewarm") for _ in range(2))
    waits = [store.reserve("dall-e-3", rates, 1, 1) for store in (first, second, first, second)]
    assert [epoch for _, epoch in waits] == [0, 0, 0, 0]
    assert waits[0][0] == 0 and all(0.8 < waits[i][0] - waits[i - 1][0] <= 1.0 for i in (1, 2, 3))
    assert RedisTier(redis_url).rate_buckets("other", "prewarm").reserve("dall-e-3", rates, 1, 1)[0] == 0
    second.pause("dall-e-3", rates, 30)
    assert first.epoch("dall-e-3") == 1
    wait, epoch = first.reserve("dall-e-3", rates, 1, 1)
    assert epoch == 1 and 29 < wait <= 30


def test_shared_buckets_behind_a_dead_redis_trip_its_breaker_and_fall_back(tmp_path: Path) -> None:
    """A Redis that is not there costs one counted tier error; while its breaker is open every
    reservation goes to this process's buckets at once, instead of waiting out a timeout each."""
    from imgcache.testing import free_port

    with Cache(redis_url=f"redis://127.0.0.1:{free_port()}", directory=tmp_path, semantic=False) as cache:
        shared = cache.rate_buckets("prewarm")
        assert shared is not None
        limiter = RateLimiter(Rates.per_minute(6000, None), shared)
        stop = threading.Event()
        started = time.monotonic()
        assert all(limiter.acquire("dall-e-3", 1, stop) for _ in range(20))
        assert time.monotonic() - started < 5
        stats = cache.stats()
        assert stats["tier_errors"]["redis"] == 1 and stats["tiers"]["redis"] == "down"


# --- retries -------------------------------------------------------------------------------------


def test_retry_after_reads_milliseconds_seconds_and_dates_and_is_capped() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"Retry-After": date}, now=now) == pytest.approx(30)
    assert retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0
    assert retry_after({"Retry-After": "86400"}) == 120.0
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({"retry-after-ms": "nan"}) is None and retry_after({}) is None


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(base=1, cap=8, jitter=0.5)
    assert [backoff.delay(a, rng=lambda: 0.0) for a in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.delay(2, rng=lambda: 1.0) == 2


def test_sdk_errors_are_classified(fake_openai: FakeOpenAI, openai_client: Any) -> None:
    def outcome(status: int, **failure: Any) -> Any:
        fake_openai.fail_next(status, **failure)
        with pytest.raises(Exception) as raised:
            openai_client.images.generate(model="dall-e-3", prompt="a fox")
        return classify(raised.value)

    limited = outcome(429, retry_after=3)
    assert (limited.kind, limited.retry_after) == ("rate_limited", 3.0)
    assert outcome(429).retry_after is None
    assert outcome(429, code="insufficient_quota").kind == "fatal"
    assert outcome(401).kind == "fatal"
    assert outcome(400, code="content_policy_violation").kind == "refused"
    assert outcome(404).kind == "refused"
    assert (outcome(500).kind, outcome(503).kind) == ("transient", "transient")
    assert not outcome(500).maybe_billed
    assert classify(ValueError("a bug")).kind == "error"
    assert classify(TimeoutError()).maybe_billed


# --- claims --------------------------------------------------------------------------------------


def test_file_claims_exclude_each_other_and_die_with_their_holder(tmp_path: Path) -> None:
    key = "a" * 64
    first, second = FileClaims(tmp_path, "ns", "prewarm"), FileClaims(tmp_path, "ns", "prewarm")
    assert first.claim(key) and not second.claim(key)
    first.release(key)
    assert second.claim(key) and not first.claim(key)
    second.close()  # a process that exits closes its files, and the kernel drops its locks
    assert first.claim(key)
    first.refuse(key, "400 content_policy_violation")
    assert second.refusal(key) == "400 content_policy_violation"


def test_redis_claims_are_exclusive_and_released(redis_url: str) -> None:
    import redis

    key = "b" * 64
    with Cache(redis_url=redis_url, semantic=False) as one, Cache(redis_url=redis_url, semantic=False) as two:
        first = one.claims("prewarm", lease=5, refusal_ttl=60)
        second = two.claims("prewarm", lease=5, refusal_ttl=60)
        assert first is not None and second is not None
        assert first.claim(key) and not second.claim(key)
        client = redis.Redis.from_url(redis_url)  # the names other versions' workers use too
        assert client.exists(f"imgcache:default:prewarm:claim:{{{key}}}")
        first.release(key)
        assert second.claim(key)
        second.close()
        assert first.claim(key)
        first.refuse(key, "400 content_policy_violation")
        assert second.refusal(key) == "400 content_policy_violation"
        assert 0 < client.pttl(f"imgcache:default:prewarm:refused:{{{key}}}") <= 60_000
        first.close()
        client.delete(f"imgcache:default:prewarm:refused:{{{key}}}")
        client.close()


def test_claims_on_a_failing_redis_go_on_as_taken_and_count_in_its_breaker() -> None:
    from imgcache.testing import free_port

    with Cache(redis_url=f"redis://127.0.0.1:{free_port()}", semantic=False) as cache:
        claims = cache.claims("prewarm", lease=5, refusal_ttl=60)
        assert claims is not None
        assert claims.claim("c" * 64) and claims.claim("c" * 64)  # nobody to ask: both go on
        assert claims.refusal("c" * 64) is None
        assert claims.errors == 3
        stats = cache.stats()
        assert stats["tier_errors"]["redis"] == 1 and stats["tiers"]["redis"] == "down"
        assert cache.claims("prewarm", lease=5, refusal_ttl=60) is None  # while it is down
        claims.close()


# --- the command line, and several worker processes ---------------------------------------------


def cli_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGCACHE_", "OPENAI_"))}
    env.update(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test", COLUMNS="160", NO_COLOR="1", **extra)
    return env


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgcache.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def worker(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "imgcache.cli", "prewarm", *args, "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, json.loads(out) if out.strip() else {}, err


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def write_prompts(path: Path, count: int) -> list[str]:
    prompts = [f"product shot number {i}" for i in range(count)]
    path.write_text("\n".join(prompts) + "\n")
    return prompts


def test_cli_dry_run_prints_calls_and_dollars(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = cli_env(fake_openai, IMGCACHE_DIR=str(tmp_path / "cache"))
    write_prompts(tmp_path / "prompts.txt", 10)
    result = cli("prewarm", str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--quality", "hd",
                 "--rpm", "5", "--dry-run", "--no-semantic", env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"would generate\s+│\s+10\s+│\s+\$0\.80", result.stdout), result.stdout
    assert re.search(r"would take\s+│\s+2 min", result.stdout), result.stdout
    limited = cli("prewarm", str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--max-usd", "0.1",
                  "--dry-run", "--no-semantic", "--json", env=env)
    assert limited.returncode == 3
    assert (json.loads(limited.stdout)["would_generate"], json.loads(limited.stdout)["over_budget"]) == (2, 8)
    assert fake_openai.calls() == 0


def test_cli_reports_bad_lines_runs_the_rest_and_shows_up_in_stats(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = cli_env(fake_openai, IMGCACHE_DIR=str(tmp_path / "cache"), IMGCACHE_NAMESPACE="shop")
    fake_openai.fail_next(400, code="content_policy_violation")
    result = cli("prewarm", "-", "--model", "dall-e-3", "--no-semantic", "--concurrency", "1", env=env,
                 stdin='{"prompt": "a forbidden fox"}\n{"prompt": "a fox", "model": "dall-e-9"}\n'
                       '{"prompt": "a red fox"}\nnot json\n')
    assert result.returncode == 3, result.stderr
    assert "<stdin>:2: unknown model 'dall-e-9'" in result.stdout
    assert "<stdin>:4: not a JSON object" in result.stdout
    assert "<stdin>:1: refused: 400 content_policy_violation" in result.stdout
    assert "prewarm: <stdin>:1: refused: 400" in result.stderr  # plain log lines: not a terminal
    assert re.search(r"generated\s+│\s+1\s+│", result.stdout)

    figures = json.loads(cli("stats", "--json", env=env).stdout)["namespaces"]["shop"]
    assert figures["prewarm"] == {"runs": 1, "generated": 1, "failed": 1, "skipped": 0, "rate_limited": 0,
                                  "spent_usd": 0.04}
    assert figures["recent_prewarm_runs"][0]["generated"] == 1
    table = cli("stats", env=env).stdout
    assert "prewarmed" in table and "recent prewarm runs" in table


def test_cli_from_history_warms_the_most_missed_prompts(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = cli_env(fake_openai, IMGCACHE_DIR=str(tmp_path / "cache"))
    with Cache(directory=tmp_path / "cache", semantic=False) as cache:
        import openai

        live = wrap(openai.OpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0), cache)
        for prompt in ["a red fox", "a red fox", "a blue fox"]:
            live.images.generate(model="dall-e-2", prompt=prompt)
            cache.delete(request_for(prompt, model="dall-e-2"))
    result = cli("prewarm", "--from-history", "1", "--since", "1h", "--no-semantic", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["generated"] == 1
    assert generated(fake_openai)["a red fox"] == 3
    both = cli("prewarm", "--from-history", "5", "--no-semantic", "--json", env=env)
    assert json.loads(both.stdout)["generated"] == 1 and generated(fake_openai)["a blue fox"] == 2


def test_cli_refuses_bad_options_with_exit_code_2(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = cli_env(fake_openai, IMGCACHE_DIR=str(tmp_path / "cache"))
    (tmp_path / "p.csv").write_text("sku,text\nA1,a fox\n")
    for args, message in [
        (["prewarm", str(tmp_path / "p.csv"), "--model", "dall-e-3"], "no 'prompt' column"),
        (["prewarm", str(tmp_path / "missing.txt"), "--model", "dall-e-3"], "cannot read"),
        (["prewarm", str(tmp_path / "p.csv"), "--from-history", "5"], "not both"),
        (["prewarm", str(tmp_path / "p.csv"), "--format", "xml"], "format must be one of"),
        (["prewarm", "--from-history", "5", "--since", "a week"], "--since"),
    ]:
        result = cli(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, result.stderr


def shared_env(shared: dict[str, Any]) -> dict[str, str]:
    if "redis_url" in shared:
        return {"IMGCACHE_REDIS_URL": shared["redis_url"]}
    return {"IMGCACHE_DIR": str(shared["directory"])}


def test_two_workers_on_one_input_generate_every_prompt_once(
        shared: dict[str, Any], fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 30)
    env = cli_env(fake_openai, IMGCACHE_NAMESPACE="team", **shared_env(shared))
    args = (str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--no-semantic", "--concurrency", "2")
    fake_openai.latency = 3.0  # both workers in flight at once before anyone finishes
    first, second = worker(*args, env=env), worker(*args, env=env)
    wait_for(lambda: fake_openai.calls() >= 4)
    fake_openai.latency = 0.01
    (code_a, report_a, err_a), (code_b, report_b, err_b) = finished(first), finished(second)

    assert (code_a, code_b) == (0, 0), err_a + err_b
    assert generated(fake_openai) == Counter(prompts)  # each prompt once, in all
    assert report_a["generated"] + report_b["generated"] == 30
    assert report_a["generated"] >= 2 and report_b["generated"] >= 2
    assert report_a["by_others"] + report_a["cached"] + report_a["generated"] == 30
    with Cache(namespace="team", semantic=False, **shared) as cache:
        assert all(cached(cache, p, **DALL_E_3) for p in prompts)


def test_two_workers_share_one_max_usd(shared: dict[str, Any], fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.txt", 30)
    env = cli_env(fake_openai, IMGCACHE_NAMESPACE="budgeted", **shared_env(shared))
    args = (str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--no-semantic", "--concurrency", "4",
            "--max-usd", "0.41")  # ten $0.04 images for the job, not ten for each worker
    fake_openai.latency = 0.3
    first, second = worker(*args, env=env), worker(*args, env=env)
    (code_a, report_a, err_a), (code_b, report_b, err_b) = finished(first), finished(second)
    assert {code_a, code_b} <= {0, 3}, err_a + err_b
    assert report_a["generated"] + report_b["generated"] == 10
    assert sum(generated(fake_openai).values()) == 10
    assert report_a["spent_usd"] + report_b["spent_usd"] == pytest.approx(0.40)


@pytest.mark.parametrize("signum, tier", [pytest.param(signal.SIGINT, "redis", id="SIGINT-redis"),
                                          pytest.param(signal.SIGTERM, "directory", id="SIGTERM-directory")])
def test_an_interrupted_run_stops_cleanly_and_a_new_run_repeats_nothing(
        signum: int, tier: str, request: pytest.FixtureRequest, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 20)
    where = ({"IMGCACHE_REDIS_URL": request.getfixturevalue("redis_url")} if tier == "redis"
             else {"IMGCACHE_DIR": str(tmp_path / "cache")})
    env = cli_env(fake_openai, **where)
    args = (str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--no-semantic", "--concurrency", "2")
    fake_openai.latency = 0.2
    proc = worker(*args, env=env)
    wait_for(lambda: fake_openai.calls() >= 4)
    proc.send_signal(signum)
    code, report, err = finished(proc)
    assert code == 130, err
    assert report["interrupted"] and not report["abandoned"] and report["not_started"] > 0
    assert report["generated"] == sum(generated(fake_openai).values())  # calls in flight finished
    assert "stopping" in err

    fake_openai.latency = 0
    code, again, err = finished(worker(*args, env=env))
    assert code == 0, err
    assert again["cached"] == report["generated"] and again["generated"] == 20 - report["generated"]
    assert generated(fake_openai) == Counter(prompts)  # nothing was generated twice


BACKGROUND = 'cd "$1" || exit 2; shift; "$@" & echo $! > pid; wait $!'
"""A job started with ``&`` by a non-interactive shell (a script, cron): such a job starts with
SIGINT ignored (POSIX), so Ctrl-C reaches it only if it installs its own handler. ``wait``
passes the job's exit status on."""


def in_background(*command: str, where: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``command`` run as such a job, from the directory ``where`` (its pid goes to ``where/pid``)."""
    return subprocess.Popen(["sh", "-c", BACKGROUND, "sh", str(where), *command], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def test_ctrl_c_stops_a_run_a_script_started_in_the_background(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    probe = in_background(sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is "
                          "signal.SIG_IGN)", where=tmp_path)
    assert probe.communicate(timeout=TIMEOUT)[0].strip() == "True"  # the setting is real: SIGINT ignored

    prompts = write_prompts(tmp_path / "prompts.txt", 20)
    env = cli_env(fake_openai, IMGCACHE_DIR=str(tmp_path / "cache"))
    (tmp_path / "pid").unlink()
    fake_openai.latency = 0.2
    proc = in_background(sys.executable, "-m", "imgcache.cli", "prewarm", str(tmp_path / "prompts.txt"),
                         "--model", "dall-e-3", "--no-semantic", "--concurrency", "2", "--json",
                         where=tmp_path, env=env)
    wait_for(lambda: fake_openai.calls() >= 4 and (tmp_path / "pid").exists())
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGINT)  # the job itself, as Ctrl-C's kill -INT
    code, report, err = finished(proc)
    assert code == 130, err
    assert report["interrupted"] and not report["abandoned"] and report["not_started"] > 0
    assert "stopping" in err
    assert report["generated"] == sum(generated(fake_openai).values()) < len(prompts)


def test_interrupts_during_a_run_are_counted_never_raised_inside_a_wait() -> None:
    """A KeyboardInterrupt raised inside Event.wait can leave the event's lock released twice
    (RuntimeError: release unlocked lock, exit status 1 instead of 130): the run counts them."""
    from imgcache.prewarm.job import _counted_interrupts

    event = threading.Event()
    # As the CLI does: a test run started as a background job begins with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _counted_interrupts() as interrupts:
            for _ in range(50):
                threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGINT)).start()
                event.wait(0.005)  # the signal arrives while the main thread waits
            wait_for(lambda: interrupts.count == 50)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):  # put back: it raises again
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_dead_workers_prompts_go_to_another_after_its_lease(
        redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 10)
    env = cli_env(fake_openai, IMGCACHE_REDIS_URL=redis_url)
    args = (str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--no-semantic", "--concurrency", "2",
            "--lease", "1.5")
    fake_openai.latency = 4.0  # the doomed worker's calls are still in flight when it dies
    doomed = worker(*args, env=env)
    wait_for(lambda: fake_openai.calls() >= 2)  # it holds the claims of prompts 0 and 1
    survivor = worker(*args, env=env)
    wait_for(lambda: fake_openai.calls() >= 4)  # the survivor saw them taken, and took 2 and 3
    doomed.kill()
    doomed.communicate(timeout=TIMEOUT)
    fake_openai.latency = 0.01
    code, report, err = finished(survivor)

    assert code == 0, err
    assert report["generated"] == 10 and report["taken_over"] == 2
    counts = generated(fake_openai)
    assert sum(counts.values()) == 12 and {counts[p] for p in prompts[:2]} == {2}  # the dead one's calls
    with Cache(redis_url=redis_url, semantic=False) as cache:
        assert all(cached(cache, p, **DALL_E_3) for p in prompts)
        assert recent_runs(cache)[0]["taken_over"] == 2


def test_a_second_interrupt_abandons_the_calls_in_flight(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 6)
    env = cli_env(fake_openai, IMGCACHE_DIR=str(tmp_path / "cache"))
    args = (str(tmp_path / "prompts.txt"), "--model", "dall-e-3", "--no-semantic", "--concurrency", "2")
    fake_openai.latency = 5.0
    proc = worker(*args, env=env)
    wait_for(lambda: fake_openai.calls() >= 2)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "stopping" in line:
            break
    proc.send_signal(signal.SIGINT)
    code, report, err = finished(proc)
    assert code == 130, err
    assert report["abandoned"] and report["generated"] == 0 and report["not_started"] == 6

    fake_openai.latency = 0  # its claims died with it: the next run takes every prompt at once
    code, again, err = finished(worker(*args, env=env))
    assert code == 0 and again["generated"] == 6, err
    assert sum(generated(fake_openai).values()) == 8 and set(generated(fake_openai)) == set(prompts)
