"""Spend limits (issue 16): a budget per window, reserved before each upstream call, shared by
every process of a Redis or a directory; hits are always served."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from _helpers import Upstream, expected

from imgcache import Budget, BudgetExceeded, Cache, ConfigError, RateLimits, Request
from imgcache.spend.spending import Spending
from imgcache.stats import Stats
from imgcache.store.ledger import FileLedger, MemoryLedger
from imgcache.testing import RedisServer, wait_until

PRICE = 0.04


def priced(cache: Cache, upstream: Upstream, price: float = PRICE) -> Any:
    @cache.cached(name="gen", cost_usd=price)
    def generate(*, prompt: str) -> bytes:
        return upstream(prompt)

    return generate


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# -- what a budget is ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "usd", "per"), [
    ("50/day", 50.0, "day"), ("$2.5/hour", 2.5, "hour"), (" 300 / month ", 300.0, "month"), ("20", 20.0, None),
])
def test_a_budget_reads_the_command_line_form(text: str, usd: float, per: str | None) -> None:
    budget = Budget.parse(text)
    assert (budget.usd, budget.per) == (usd, per)


@pytest.mark.parametrize("text", ["", "fifty/day", "50/week", "-5/day", "50/day/extra", "nan", "1e3/day"])
def test_a_malformed_budget_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match="budget"):
        Budget.parse(text)


@pytest.mark.parametrize("options", [
    {"usd": -1}, {"usd": float("inf")}, {"usd": True}, {"usd": "5"}, {"usd": 5, "per": "week"},
    {"usd": 5, "warn_at": 0}, {"usd": 5, "warn_at": 1.5}, {"usd": 5, "scope": "global"},
    {"usd": 5, "unpriced": "maybe"}, {"usd": 5, "webhook": "file:///etc/passwd"},
])
def test_bad_budget_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        Budget(**options)
    assert any(repr(value) in str(raised.value) for value in options.values() if value != 5)


def test_a_cache_takes_only_a_budget_object() -> None:
    with pytest.raises(ConfigError, match="imgcache.Budget"):
        Cache("b", semantic=False, budget="50/day")  # type: ignore[arg-type]


@pytest.mark.parametrize(("per", "at", "name", "resets"), [
    ("hour", "2026-12-05T13:59:59", "2026-12-05T13", "2026-12-05T14:00:00"),
    ("day", "2026-12-05T23:59:59", "2026-12-05", "2026-12-06T00:00:00"),
    ("month", "2026-12-31T12:00:00", "2026-12", "2027-01-01T00:00:00"),
    ("month", "2028-02-29T00:00:00", "2028-02", "2028-03-01T00:00:00"),
])
def test_windows_are_calendar_periods_in_utc(per: str, at: str, name: str, resets: str) -> None:
    window = Budget(10, per).window(utc(at))
    assert window.name == name and window.resets_at == utc(resets)


def test_a_budget_without_a_period_never_resets() -> None:
    window = Budget(10).window(utc("2026-12-05T12:00:00"))
    assert window.name == "total" and window.resets_at is None and window.seconds_left(0) is None


# -- one process -----------------------------------------------------------------------------


def test_a_miss_that_would_pass_the_budget_raises_before_any_upstream_call(make_cache: Any) -> None:
    upstream = Upstream()
    cache = make_cache(semantic=False, budget=Budget(0.10, per="day"))
    generate = priced(cache, upstream)
    assert generate(prompt="one") == expected("one")
    assert generate(prompt="two") == expected("two")
    with pytest.raises(BudgetExceeded) as refused:
        generate(prompt="three")
    assert upstream.calls == 2  # floor(0.10 / 0.04)
    assert refused.value.limit_usd == 0.10 and refused.value.spent_usd == pytest.approx(0.08)
    assert 0 < refused.value.retry_after <= 86400
    assert generate(prompt="one") == expected("one")  # a hit is served over budget
    budget = cache.stats()["budget"]
    assert (budget["limit_usd"], budget["per"], budget["spent_usd"], budget["refused"]) == (0.10, "day", 0.08, 1)
    assert budget["remaining_usd"] == pytest.approx(0.02) and budget["resets_at"].endswith("T00:00:00Z")


def test_the_budget_is_kept_in_the_directory_across_runs(make_cache: Any) -> None:
    upstream = Upstream()
    with Cache("runs", directory=make_cache().directory, semantic=False, budget=Budget(0.10)) as first:
        priced(first, upstream)(prompt="one")
    with Cache("runs", directory=first.directory, semantic=False, budget=Budget(0.10)) as second:
        generate = priced(second, upstream)
        generate(prompt="two")
        with pytest.raises(BudgetExceeded):
            generate(prompt="three")
    assert upstream.calls == 2


def test_an_api_refusal_gives_the_hold_back_and_a_timeout_keeps_it(make_cache: Any) -> None:
    cache = make_cache(semantic=False, budget=Budget(0.10))
    outcomes = iter([ValueError("400 from the API"), TimeoutError("no answer"), None, None])

    @cache.cached(name="gen", cost_usd=PRICE)
    def generate(*, prompt: str) -> bytes:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return expected(prompt)

    with pytest.raises(ValueError):
        generate(prompt="refused")
    with pytest.raises(TimeoutError):
        generate(prompt="timed out")  # may have been billed: $0.04 counted
    assert generate(prompt="fine") == expected("fine")
    with pytest.raises(BudgetExceeded):
        generate(prompt="one too many")
    assert cache.stats()["budget"]["spent_usd"] == pytest.approx(0.08)


def test_the_real_cost_settles_the_estimate(make_cache: Any) -> None:
    cache = make_cache(semantic=False, budget=Budget(1.0))
    answer = {"usage": 0.25}
    request = Request.build("generation", "generate", "a prompt", {})
    result = cache.fetch(request, lambda: answer, cost_usd=lambda result: result["usage"], estimate_usd=0.9)
    assert result == answer and cache.stats()["budget"]["spent_usd"] == pytest.approx(0.25)
    with pytest.raises(BudgetExceeded):  # 0.25 spent: an estimate of 0.9 no longer fits
        cache.fetch(Request.build("generation", "generate", "another", {}), lambda: answer,
                    cost_usd=lambda result: result["usage"], estimate_usd=0.9)


def test_unpriced_calls_pass_uncounted_or_are_refused(make_cache: Any, caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream()
    allowing = make_cache("allow", semantic=False, budget=Budget(0.01))
    unpriced = allowing.cached(name="gen")(lambda *, prompt: upstream(prompt))  # no model: no price
    with caplog.at_level(logging.WARNING, logger="imgcache"):
        assert [unpriced(prompt=p) for p in ("a", "b")] == [expected("a"), expected("b")]
    assert sum("no known price" in r.getMessage() for r in caplog.records) == 1
    assert allowing.stats()["budget"]["unpriced"] == 2
    refusing = make_cache("refuse", semantic=False, budget=Budget(0.01, unpriced="refuse"))
    with pytest.raises(BudgetExceeded, match="no known price"):
        refusing.cached(name="gen")(lambda *, prompt: upstream(prompt))(prompt="c")
    assert upstream.calls == 2


def test_async_calls_draw_on_the_same_budget(make_cache: Any) -> None:
    cache = make_cache(semantic=False, budget=Budget(0.10))
    upstream = Upstream()

    @cache.cached(name="gen", cost_usd=PRICE)
    async def generate(*, prompt: str) -> bytes:
        return upstream(prompt)

    async def main() -> list[Any]:
        return await asyncio.gather(*(generate(prompt=f"p{i}") for i in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 3 and upstream.calls == 2


def test_a_window_that_ends_gives_the_whole_budget_again(tmp_path: Path) -> None:
    now = [utc("2026-12-05T23:59:00")]
    budget = Budget(0.10, per="day")
    spending = Spending(budget, "ns", FileLedger(tmp_path, "ns", clock=lambda: now[0]), Stats(), clock=lambda: now[0])
    for _ in range(2):
        spending.settle(spending.reserve(PRICE, "generation"), PRICE)
    with pytest.raises(BudgetExceeded) as refused:
        spending.reserve(PRICE, "generation")
    assert refused.value.retry_after == 60
    now[0] = utc("2026-12-06T00:00:01")
    assert spending.reserve(PRICE, "generation") is not None
    assert spending.status()["window"] == "2026-12-06"


def test_a_hold_whose_process_died_is_spent_when_it_lapses(tmp_path: Path) -> None:
    now = [1000.0]
    ledger = FileLedger(tmp_path, "ns", clock=lambda: now[0])
    dying = Spending(Budget(0.10), "ns", ledger, Stats(), clock=lambda: now[0], hold_seconds=60)
    dying.reserve(PRICE, "generation")  # never settled
    now[0] += 61
    status = Spending(Budget(0.10), "ns", ledger, Stats(), clock=lambda: now[0]).status()
    assert (status["spent_usd"], status["held_usd"]) == (PRICE, 0.0)  # never back to free


def test_a_ledger_file_that_does_not_parse_is_taken_as_spent(
        make_cache: Any, cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = make_cache(semantic=False, budget=Budget(0.10))
    upstream = Upstream()
    generate = priced(cache, upstream)
    generate(prompt="one")
    ledger = cache_dir / "test" / "budget" / "total.json"
    ledger.write_bytes(b"\x00garbage{")
    with caplog.at_level(logging.ERROR, logger="imgcache"), pytest.raises(BudgetExceeded):
        generate(prompt="two")
    assert "does not parse" in caplog.text
    assert json.loads(ledger.read_bytes())["spent"] == 100_000  # rewritten, whole
    assert generate(prompt="one") == expected("one") and upstream.calls == 1


# -- a fleet ---------------------------------------------------------------------------------

WORKER = r'''
import json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from imgcache import Budget, BudgetExceeded, Cache

cfg = json.loads(sys.argv[1])
cache = Cache("fleet", semantic=False, budget=Budget(cfg["usd"], per="day"), **cfg["storage"])
lock = threading.Lock()
made = []

@cache.cached(name="gen", cost_usd=cfg["price"])
def generate(*, prompt):
    with lock:
        made.append(prompt)
    return prompt.encode()

def one(i):
    try:
        generate(prompt=f"{cfg['tag']} {i}")
        return "made"
    except BudgetExceeded:
        return "refused"

Path(cfg["ready"]).write_text("ready")
deadline = time.monotonic() + 60
while not Path(cfg["go"]).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
with ThreadPoolExecutor(8) as pool:  # both processes at once, eight calls at a time each
    outcomes = list(pool.map(one, range(cfg["calls"])))
cache.close()
print(json.dumps({"made": len(made), "refused": outcomes.count("refused")}))
'''


@pytest.fixture
def budget_worker(tmp_path: Path) -> Path:
    path = tmp_path / "budget_worker.py"
    path.write_text(WORKER)
    return path


def test_two_processes_sharing_a_budget_never_overspend(
        shared_storage: dict[str, Any], budget_worker: Path, tmp_path: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    storage = {k: str(v) for k, v in shared_storage.items()}
    usd, price, calls = 1.0, 0.03, 40  # room for floor(1.00 / 0.03) = 33 of the 80 misses
    go = tmp_path / "go"
    for tag in ("a", "b"):
        processes.append(subprocess.Popen(
            [sys.executable, str(budget_worker), json.dumps(
                {"usd": usd, "price": price, "calls": calls, "tag": tag, "storage": storage,
                 "ready": str(tmp_path / f"ready-{tag}"), "go": str(go)})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    assert wait_until(lambda: all((tmp_path / f"ready-{tag}").exists() for tag in "ab"), timeout=60)
    go.write_text("go")
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["made"] for o in outputs) == 33
    assert sum(o["refused"] for o in outputs) == 2 * calls - 33


def test_redis_going_away_leaves_calls_working_on_the_last_known_figure(
        own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream()
    with Cache("away", redis_url=own_redis.url, semantic=False, budget=Budget(0.20)) as cache:
        generate = priced(cache, upstream)
        generate(prompt="one")
        generate(prompt="two")
        own_redis.kill()
        with caplog.at_level(logging.WARNING, logger="imgcache"):
            outcomes = []
            for prompt in ("three", "four", "five", "six"):
                try:
                    outcomes.append(generate(prompt=prompt) == expected(prompt))
                except BudgetExceeded:
                    outcomes.append("refused")
        assert outcomes == [True, True, True, "refused"]  # $0.08 known spent: three more fit in $0.20
        assert sum("budget ledger is unreachable" in r.getMessage() for r in caplog.records) == 1
        assert cache.stats()["budget"]["shared"] is False


def test_what_was_spent_during_an_outage_is_written_back(own_redis: RedisServer) -> None:
    upstream = Upstream()
    with Cache("back", redis_url=own_redis.url, semantic=False, budget=Budget(1.0)) as cache:
        generate = priced(cache, upstream)
        generate(prompt="before")
        own_redis.kill()
        generate(prompt="during")
        own_redis.restart()
        assert wait_until(lambda: cache.store.breakers["redis"].closed), "the breaker never closed"
        generate(prompt="after")
    client = redis.Redis.from_url(own_redis.url)
    try:
        # the server (no persistence) forgot "before"; "during" was written back, then "after"
        assert int(client.hget("imgcache:back:budget:total", "spent")) == 2 * 40_000
    finally:
        client.close()


def test_a_ledger_key_of_another_type_costs_itself_not_the_tier(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("imgcache:typed:budget:total", b"not a hash")
        with Cache("typed", redis_url=redis_url, semantic=False, budget=Budget(0.10)) as cache:
            upstream = Upstream()
            assert priced(cache, upstream)(prompt="one") == expected("one")
            assert client.type("imgcache:typed:budget:total") == b"hash"
            assert cache.stats()["budget"]["shared"] is True and cache.stats()["corrupt"] >= 1
    finally:
        client.close()


def test_a_shared_scope_is_one_budget_over_every_namespace(redis_url: str) -> None:
    upstream = Upstream()
    budget = Budget(0.10, scope="shared")
    with Cache("one", redis_url=redis_url, semantic=False, budget=budget) as one, \
            Cache("two", redis_url=redis_url, semantic=False, budget=budget) as two:
        priced(one, upstream)(prompt="a")
        priced(two, upstream)(prompt="b")
        with pytest.raises(BudgetExceeded):
            priced(one, upstream)(prompt="c")
    with Cache("three", redis_url=redis_url, semantic=False, budget=Budget(0.10)) as own:
        priced(own, upstream)(prompt="d")  # a namespace budget of its own
    assert upstream.calls == 3


# -- warnings --------------------------------------------------------------------------------


class Hook(http.server.BaseHTTPRequestHandler):
    events: list[dict[str, Any]]
    release: threading.Event

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.release.wait(30)
        self.events.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    events: list[dict[str, Any]] = []
    release = threading.Event()
    handler = type("H", (Hook,), {"events": events, "release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", events, release
    release.set()
    server.shutdown()
    server.server_close()


def test_the_warning_level_is_said_once_a_window_without_delaying_a_call(
        make_cache: Any, webhook: tuple[str, list[dict[str, Any]], threading.Event],
        caplog: pytest.LogCaptureFixture) -> None:
    url, events, release = webhook  # the webhook answers only once released: a slow one
    budget = Budget(0.20, per="day", warn_at=0.5, webhook=url)
    first, second = make_cache(semantic=False, budget=budget), make_cache(semantic=False, budget=budget)
    upstream = Upstream()
    with caplog.at_level(logging.WARNING, logger="imgcache"):
        for i, cache in enumerate([first, second, first, second]):
            priced(cache, upstream)(prompt=f"p{i}")  # returns while the webhook hangs
    assert upstream.calls == 4 and not events
    release.set()
    assert first.spending.alerts.wait_idle(30)
    assert [e["event"] for e in events] == ["budget_warning"]
    assert events[0]["spent_usd"] + events[0]["held_usd"] == pytest.approx(0.12) and events[0]["limit_usd"] == 0.2
    assert sum("is 60% used" in r.getMessage() for r in caplog.records) == 1
    assert first.stats()["budget"]["warnings"] + second.stats()["budget"]["warnings"] == 1


def test_a_webhook_that_is_down_costs_nothing_but_its_events(make_cache: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = make_cache(semantic=False, budget=Budget(0.04, warn_at=0.5, webhook=f"http://127.0.0.1:{port}/"))
    cache.spending.alerts.backoff = 0.01
    with caplog.at_level(logging.WARNING, logger="imgcache"):
        assert priced(cache, Upstream())(prompt="one") == expected("one")
        assert cache.spending.alerts.wait_idle(30)
    assert cache.spending.alerts.failed == 1 and "alert webhook" in caplog.text


def test_memory_books_never_pass_the_limit_under_threads() -> None:
    spending = Spending(Budget(1.0), "ns", None, Stats())
    granted: list[Any] = []

    def worker() -> None:
        for _ in range(50):
            try:
                granted.append(spending.reserve(0.07, "generation"))
            except BudgetExceeded:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(granted) == 14  # floor(1.00 / 0.07)
    assert isinstance(spending.local, MemoryLedger)


def test_a_budget_on_a_redis_cluster(redis_cluster_url: str) -> None:
    upstream = Upstream()
    with Cache("clustered", redis_url=redis_cluster_url, semantic=False, budget=Budget(0.10, per="hour")) as cache:
        generate = priced(cache, upstream)
        generate(prompt="a")
        generate(prompt="b")
        with pytest.raises(BudgetExceeded):
            generate(prompt="c")
        assert cache.stats()["budget"]["shared"] is True
    assert upstream.calls == 2


# -- the proxy -------------------------------------------------------------------------------


def test_the_proxy_answers_a_miss_over_budget_429_and_serves_hits(make_cache: Any, fake_openai: Any) -> None:
    import openai

    from imgcache.proxy import ProxyConfig, ProxyServer

    cache = make_cache(semantic=False, budget=Budget(0.10, per="day"))  # dall-e-3 standard 1024: $0.04
    server = ProxyServer(ProxyConfig(upstream=fake_openai.base_url, namespace_mode="shared"), cache).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-budget-0123456789", max_retries=0)

        def generate(prompt: str) -> Any:
            return client.images.with_raw_response.generate(prompt=prompt, model="dall-e-3", response_format="b64_json")

        assert generate("a red fox").headers["x-imgcache"] == "miss"
        assert generate("a blue fox").headers["x-imgcache"] == "miss"
        with pytest.raises(openai.RateLimitError) as refused:
            generate("a green fox")
        answer = refused.value.response
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "budget_exceeded"
        assert 0 < int(answer.headers["retry-after"]) <= 86400
        assert answer.headers["x-imgcache"] == "error; reason=budget"
        assert generate("a red fox").headers["x-imgcache"].startswith("hit")  # hits as usual
        assert fake_openai.calls("/v1/images/generations") == 2
        metrics = httpx.get(f"{server.base_url.removesuffix('/v1')}/metrics").text
        assert "imgcache_budget_refused_total 1.0" in metrics
        assert "imgcache_spent_usd_total 0.08" in metrics and "imgcache_saved_usd_total 0.04" in metrics
        assert 'imgcache_budget_used_usd{namespace="test"} 0.08' in metrics
        assert 'imgcache_budget_limit_usd{namespace="test"} 0.1' in metrics
    finally:
        server.stop()


@pytest.mark.parametrize(("flags", "named"), [
    (["--budget", "fifty"], "fifty"), (["--budget", "5/week"], "week"),
    (["--budget", "5/day", "--budget-scope", "galaxy"], "galaxy"),
    (["--budget", "5/day", "--alert-webhook", "ftp://example"], "ftp://example"),
])
def test_a_malformed_budget_flag_stops_serve_naming_it(flags: list[str], named: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "imgcache.cli", "serve", "--port", "1", *flags], check=False,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "IMGCACHE_DIR": str(tmp_path)})
    assert done.returncode != 0 and named in done.stderr, done.stderr


def test_imgcache_stats_shows_spend_against_the_budget_and_429s_avoided(tmp_path: Path) -> None:
    env = {**os.environ, "IMGCACHE_DIR": str(tmp_path), "IMGCACHE_BUDGET": "1/day", "IMGCACHE_RPM": "*=600"}
    with Cache.from_env(semantic=False, directory=str(tmp_path), budget=Budget(1, per="day"),
                        rate_limits=RateLimits({"*": 600})) as cache:
        generate = priced(cache, Upstream(), price=0.3)
        for prompt in ("a", "b", "c"):
            generate(prompt=prompt)
    done = subprocess.run([sys.executable, "-m", "imgcache.cli", "stats", "--namespace", "default"], check=False,
                          capture_output=True, text=True, timeout=60, env={**env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "$0.90 of $1.00/day" in done.stdout and "90.0% used" in done.stdout
    assert "429s avoided" in done.stdout


# -- found by a review ---------------------------------------------------------------------


def test_a_call_priced_only_by_its_answer_is_charged_after_it(make_cache: Any) -> None:
    cache = make_cache(semantic=False, budget=Budget(0.50))
    answer = {"usage": 0.30}
    for prompt in ("one", "two"):  # no estimate: nothing held, the real cost charged afterwards
        cache.fetch(Request.build("vision", "chat", prompt, {}), lambda: answer, cost_usd=lambda r: r["usage"])
    assert cache.stats()["budget"]["spent_usd"] == pytest.approx(0.60)  # spent is spent, past the limit
    with pytest.raises(BudgetExceeded):
        cache.fetch(Request.build("vision", "chat", "three", {}), lambda: answer, cost_usd=lambda r: r["usage"],
                    estimate_usd=lambda: 0.01)  # an estimate asked just before the call


@pytest.mark.parametrize("where", ["memory", "directory", "redis"])
def test_every_ledger_step_sent_twice_changes_nothing(where: str, tmp_path: Path, request: pytest.FixtureRequest
                                                      ) -> None:
    from imgcache.store.ledger import MemoryLedger

    if where == "redis":
        cache = Cache("twice", redis_url=request.getfixturevalue("redis_url"), semantic=False)
        ledger: Any = cache.store.ledger("twice")
    else:
        cache = None
        ledger = MemoryLedger() if where == "memory" else FileLedger(tmp_path, "twice")
    try:
        limit, day = 1_000_000, 86_400_000
        for _ in range(2):
            assert ledger.reserve("w", "a", 500_000, limit, -1, 60_000, day).granted
        assert ledger.read("w", limit).held == 500_000  # one hold, not two
        assert ledger.reserve("w", "b", 500_000, limit, -1, 60_000, day).granted
        for _ in range(2):
            ledger.settle("w", "b", 0, limit, -1, day)  # refused by the API, settled twice
        found = ledger.read("w", limit)
        assert (found.spent, found.held) == (0, 500_000)  # "a" still holds its half
        assert not ledger.reserve("w", "c", 600_000, limit, -1, 60_000, day).granted
    finally:
        if cache is not None:
            cache.close()


def test_a_fixed_budget_is_kept_for_ever_in_redis_even_after_a_debt_is_paid(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        with Cache("forever", redis_url=redis_url, semantic=False, budget=Budget(1.0)) as cache:
            cache.fetch(Request.build("vision", "chat", "a", {}), dict, cost_usd=lambda r: 0.1)  # a charge
            priced(cache, Upstream())(prompt="b")
        assert client.ttl("imgcache:forever:budget:total") == -1  # no expiry
    finally:
        client.close()


def test_a_cost_beyond_any_budget_cannot_wrap_the_ledger(redis_url: str) -> None:
    with Cache("huge", redis_url=redis_url, semantic=False, budget=Budget(1.0)) as cache:
        cache.fetch(Request.build("vision", "chat", "a", {}), dict, cost_usd=lambda r: 1e30)
        with pytest.raises(BudgetExceeded):
            priced(cache, Upstream())(prompt="b")
        assert cache.stats()["budget"]["spent_usd"] == 1e9  # capped, exact


def test_namespaces_warning_through_one_webhook_share_one_sender(make_cache: Any) -> None:
    budget = Budget(1.0, webhook="http://127.0.0.1:9/hook")
    first, second = make_cache("one", semantic=False, budget=budget), make_cache("two", semantic=False, budget=budget)
    assert first.spending.alerts is second.spending.alerts


def test_a_budget_beyond_a_billion_dollars_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="budget usd"):
        Budget.parse("9" * 308)


def test_the_proxy_upstream_errors_are_read_like_the_sdk_ones() -> None:
    from imgcache.proxy.upstream import Reply, UpstreamError, UpstreamFailure
    from imgcache.spend.outcomes import classify

    limited = classify(UpstreamError(Reply(429, [(b"Retry-After", b"7")], b"{}", 0.0)))
    assert (limited.kind, limited.retry_after) == ("rate_limited", 7.0)
    assert classify(UpstreamError(Reply(400, [], b"{}", 0.0))).kind == "refused"
    timed_out = classify(UpstreamFailure(504, "no answer in time", "upstream_timeout"))
    assert timed_out.maybe_billed
