"""Rate shaping for live calls (issue 16): a miss waits its turn under per-model token
buckets instead of meeting a 429; an upstream 429 pauses the model for every worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _helpers import expected

from imgcache import Budget, Cache, ConfigError, RateLimited, RateLimits
from imgcache.testing import RedisServer


class TooManyRequests(Exception):
    """What an SDK raises for a 429: a status code and a response with headers."""

    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__("429 rate limit exceeded")
        self.response = type("Response", (), {"status_code": 429, "headers": {"retry-after": str(retry_after)}})()


class LimitedApi:
    """A stand-in API that allows ``per_second`` calls in any one-second window (a burst of
    one more is a 429), or answers 429 to the calls of ``storm`` seconds after the first."""

    def __init__(self, per_second: float = 1e9, *, storm: float = 0.0, retry_after: float = 1.0) -> None:
        self.per_second = per_second
        self.storm = storm
        self.retry_after = retry_after
        self.calls: list[float] = []
        self.refusals: list[float] = []
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def __call__(self, prompt: str) -> bytes:
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.per_second or (self.storm and self.calls and now - self.calls[0] < self.storm):
                self.refusals.append(now)
                raise TooManyRequests(self.retry_after)
            self._recent.append(now)
            self.calls.append(now)
        return expected(prompt)


def shaped(cache: Cache, api: LimitedApi, model: str = "dall-e-3") -> Any:
    @cache.cached(name="gen")
    def generate(*, prompt: str, model: str = model) -> bytes:
        return api(prompt)

    return generate


@pytest.mark.parametrize(("rpm", "named"), [
    (["dall-e-3"], "dall-e-3"), (["dall-e-3=0"], "dall-e-3=0"), (["dall-e-3=fast"], "dall-e-3=fast"),
    (["=5"], "=5"),
])
def test_a_malformed_limit_is_a_config_error_naming_it(rpm: list[str], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RateLimits.parse(rpm)
    assert named in str(raised.value)


@pytest.mark.parametrize("options", [{"queue_timeout": -1}, {"queue_timeout": 1e9}, {"burst": 0},
                                     {"rpm": {"dall-e-3": float("nan")}}, {"ipm": ["x"]}])
def test_bad_rate_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RateLimits(**options)


def test_a_burst_is_kept_under_the_limit_with_no_upstream_429(make_cache: Any) -> None:
    api = LimitedApi(per_second=10)  # 600 requests per minute, and not one more in any second
    cache = make_cache(semantic=False, rate_limits=RateLimits(rpm={"dall-e-3": 480}, queue_timeout=30))
    generate = shaped(cache, api)
    with ThreadPoolExecutor(30) as pool:  # 30 at once: without shaping, 20 would meet a 429
        results = list(pool.map(lambda i: generate(prompt=f"p{i}"), range(30)))
    assert results == [expected(f"p{i}") for i in range(30)]
    assert api.refusals == [] and len(api.calls) == 30
    rate = cache.stats()["rate"]
    assert rate["queued"] >= 25 and rate["waited_seconds"] > 0 and "upstream_429" not in rate


def test_a_turn_beyond_the_queue_timeout_is_refused_at_once_and_its_budget_given_back(make_cache: Any) -> None:
    api = LimitedApi()
    cache = make_cache(semantic=False, budget=Budget(1.0),
                       rate_limits=RateLimits(rpm={"*": 6}, queue_timeout=0.5))  # one call per 10 s

    @cache.cached(name="gen", cost_usd=0.04)
    def generate(*, prompt: str, model: str = "gpt-image-1") -> bytes:
        return api(prompt)

    generate(prompt="first")
    with pytest.raises(RateLimited) as refused:
        generate(prompt="second")
    assert 9 < refused.value.retry_after <= 10
    assert len(api.calls) == 1 and cache.stats()["rate"]["refused"] == 1
    assert cache.stats()["budget"]["spent_usd"] == pytest.approx(0.04)  # the refused call holds nothing
    assert generate(prompt="first") == expected("first")  # hits never queue


def test_other_models_have_queues_of_their_own(make_cache: Any) -> None:
    api = LimitedApi()
    cache = make_cache(semantic=False, rate_limits=RateLimits(rpm={"dall-e-3": 6}, queue_timeout=0))
    generate = shaped(cache, api)
    generate(prompt="a")
    with pytest.raises(RateLimited):
        generate(prompt="b")
    assert generate(prompt="c", model="gpt-image-1") == expected("c")  # no limit named for it


def test_images_per_minute_count_every_image_of_a_call(make_cache: Any) -> None:
    api = LimitedApi()
    cache = make_cache(semantic=False, rate_limits=RateLimits(ipm={"gpt-image-1": 4}, queue_timeout=0))

    @cache.cached(name="gen")
    def generate(*, prompt: str, model: str = "gpt-image-1", n: int = 1) -> bytes:
        return api(prompt)

    generate(prompt="four at once", n=4)
    with pytest.raises(RateLimited):
        generate(prompt="one more")


def test_a_429_storm_pauses_the_model_for_every_worker(redis_url: str) -> None:
    api = LimitedApi(storm=0.01, retry_after=1.0)  # the first call goes; the next 10 ms are 429s
    limits = RateLimits(queue_timeout=30)  # no rates: only the upstream's 429s shape the calls
    workers = [Cache("storm", redis_url=redis_url, semantic=False, rate_limits=limits) for _ in range(2)]
    try:
        generators = [shaped(worker, api) for worker in workers]
        generators[0](prompt="first")
        api.storm, api.calls[0] = 60.0, time.monotonic()  # from now on 429s, for a minute

        with pytest.raises(TooManyRequests):
            generators[0](prompt="refused")
        paused_at = api.refusals[-1]
        api.storm = 0.0  # the API is fine again; the pause still holds every worker back
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda g=g, i=i: results.append(g(prompt=f"after {i}")))
                   for i, g in enumerate(generators * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 4
        later = [at for at in api.calls if at > paused_at]
        assert len(later) == 4 and min(later) >= paused_at + 0.9  # nobody went during the pause
        assert len(api.refusals) == 1
        assert sum(worker.stats()["rate"].get("upstream_429", 0) for worker in workers) == 1
    finally:
        for worker in workers:
            worker.close()


def test_async_calls_wait_their_turn_too(make_cache: Any) -> None:
    api = LimitedApi(per_second=5)
    cache = make_cache(semantic=False, rate_limits=RateLimits(rpm={"dall-e-3": 240}, queue_timeout=30))

    @cache.cached(name="gen")
    async def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
        return api(prompt)

    async def main() -> list[bytes]:
        return await asyncio.gather(*(generate(prompt=f"p{i}") for i in range(12)))

    assert asyncio.run(main()) == [expected(f"p{i}") for i in range(12)]
    assert api.refusals == []


def test_the_proxy_answers_a_turn_beyond_the_queue_timeout_429(make_cache: Any, fake_openai: Any) -> None:
    import openai

    from imgcache.proxy import ProxyConfig, ProxyServer

    cache = make_cache(semantic=False, rate_limits=RateLimits(rpm={"dall-e-3": 1}, queue_timeout=0))
    server = ProxyServer(ProxyConfig(upstream=fake_openai.base_url, namespace_mode="shared"), cache).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-rate-0123456789", max_retries=0)
        client.images.generate(prompt="a red fox", model="dall-e-3")
        with pytest.raises(openai.RateLimitError) as refused:
            client.images.generate(prompt="a blue fox", model="dall-e-3")
        answer = refused.value.response
        assert answer.json()["error"]["code"] == "rate_limit_exceeded"
        assert 55 <= int(answer.headers["retry-after"]) <= 60
        assert fake_openai.calls("/v1/images/generations") == 1
    finally:
        server.stop()


def test_rate_limits_from_the_environment() -> None:
    from imgcache._config import cache_config_from_env

    limits = cache_config_from_env({"IMGCACHE_RPM": "dall-e-3=5, *=50", "IMGCACHE_IPM": "gpt-image-1=20",
                                    "IMGCACHE_QUEUE_TIMEOUT": "45s"})["rate_limits"]
    assert limits == RateLimits({"dall-e-3": 5, "*": 50}, {"gpt-image-1": 20}, queue_timeout=45)
    with pytest.raises(ConfigError, match="fast"):
        cache_config_from_env({"IMGCACHE_RPM": "dall-e-3=fast"})


def test_redis_going_away_leaves_each_worker_its_own_buckets(own_redis: RedisServer) -> None:
    api = LimitedApi(per_second=5)
    with Cache("away", redis_url=own_redis.url, semantic=False,
               rate_limits=RateLimits(rpm={"dall-e-3": 240}, queue_timeout=30)) as cache:
        generate = shaped(cache, api)
        generate(prompt="before")
        own_redis.kill()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: generate(prompt=f"during {i}"), range(8)))
        assert results == [expected(f"during {i}") for i in range(8)]
        assert api.refusals == []  # this process's buckets kept the pace


def test_callers_naming_models_cannot_make_buckets_without_end(redis_url: str) -> None:
    import redis

    api = LimitedApi()
    with Cache("models", redis_url=redis_url, semantic=False,
               rate_limits=RateLimits(rpm={"dall-e-3": 6000, "*": 6000})) as cache:
        generate = shaped(cache, api)
        for i in range(100):
            generate(prompt=f"p{i}", model=f"made-up-model-{i}")
        generate(prompt="named", model="dall-e-3")
    client = redis.Redis.from_url(redis_url)
    try:
        buckets = sorted(key.decode() for key in client.scan_iter(match="imgcache:models:account:rate:*"))
    finally:
        client.close()
    assert buckets == ["imgcache:models:account:rate:_", "imgcache:models:account:rate:dall-e-3"]  # "*" is "_"


def test_image_edits_count_their_images_too(make_cache: Any) -> None:
    from imgcache import Request

    cache = make_cache(semantic=False, rate_limits=RateLimits(ipm={"gpt-image-1": 4}, queue_timeout=0))
    edit = {"model": "gpt-image-1", "n": 4}
    cache.fetch(Request.build("vision", "openai.images.edit", "make it blue", edit), lambda: b"four")
    with pytest.raises(RateLimited):
        cache.fetch(Request.build("vision", "openai.images.edit", "make it red", edit), lambda: b"four more")
