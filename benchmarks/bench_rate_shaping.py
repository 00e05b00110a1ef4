"""Rate shaping of live calls: a burst above the account's rate limit, with and without
``imgcache.RateLimits``, side by side.

    python benchmarks/bench_rate_shaping.py [--quick] [--json] [--strict]

The upstream is an in-process stand-in for an image API with a rate limit of ``LIMIT``
requests in any one second (a request over it is answered 429 with ``Retry-After: 1``), that
also answers 429 (``Retry-After: 0.5``) to one accepted request in 20, as a busy API does. A
burst of N distinct prompts arrives at once from 16 threads, through ``@cache.cached`` on the
embedded cache (every call a miss). Each caller retries a 429 twice, waiting its Retry-After,
like the OpenAI SDK's default (``max_retries=2``).

* baseline: no rate limits: the burst reaches the API at once;
* candidate: ``RateLimits(rpm={model: LIMIT * 60})``: calls wait their turn, and a 429 pauses
  the model for every caller.

Reported for both: upstream 429s, calls completed and failed (out of retries), and the
burst's wall time. Target: the shaped burst completes every call, and meets no 429 but the
injected ones (at most N / 20 + 1).

Exit status is 0 whatever the figures unless a benchmark could not run; with ``--strict`` a
missed target also exits 1.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Result,
    emit_json,
    exit_code,
    parser,
    print_facts,
    report_stream,
    run_guarded,
    table,
)

from imgcache import Cache, RateLimits

LIMIT = 20  # requests in any one second
INJECT_EVERY = 20
THREADS = 16
MODEL = "gpt-image-1"


class TooManyRequests(Exception):
    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__("429")
        self.retry_after = retry_after
        self.response = type("Response", (), {"status_code": 429, "headers": {"retry-after": str(retry_after)}})()


class LimitedApi:
    """``LIMIT`` requests per rolling second; every ``INJECT_EVERY``-th accepted one is a 429."""

    def __init__(self) -> None:
        self.accepted = self.over_limit = self.injected = 0
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    @property
    def refusals(self) -> int:
        return self.over_limit + self.injected

    def __call__(self, prompt: str) -> bytes:
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= LIMIT:
                self.over_limit += 1
                raise TooManyRequests(1.0)
            self._recent.append(now)
            self.accepted += 1
            if self.accepted % INJECT_EVERY == 0:
                self.injected += 1
                raise TooManyRequests(0.5)
        return f"image for {prompt}".encode()


def burst(count: int, limits: RateLimits | None) -> dict[str, Any]:
    api = LimitedApi()
    tmp = tempfile.mkdtemp(prefix="imgcache-bench-")
    try:
        with Cache(directory=tmp, semantic=False, rate_limits=limits) as cache:
            @cache.cached(name="gen")
            def generate(*, prompt: str, model: str = MODEL) -> bytes:
                return api(prompt)

            def caller(i: int) -> bool:
                for attempt in range(3):  # the SDK's default: two retries
                    try:
                        generate(prompt=f"prompt {i}")
                        return True
                    except TooManyRequests as exc:
                        if attempt < 2:
                            time.sleep(exc.retry_after)
                return False

            started = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                done = list(pool.map(caller, range(count)))
            wall = time.perf_counter() - started
            rate = cache.stats().get("rate", {})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"completed": sum(done), "failed": count - sum(done), "upstream_429": api.refusals,
            "over_limit": api.over_limit, "injected": api.injected, "wall_s": round(wall, 2),
            "queued": int(rate.get("queued", 0))}


def bench_shaping(quick: bool, out: TextIO) -> Result:
    count = 60 if quick else 200
    baseline = burst(count, None)
    candidate = burst(count, RateLimits(rpm={MODEL: LIMIT * 60}, queue_timeout=120))
    passed = candidate["failed"] == 0 and candidate["upstream_429"] <= count // INJECT_EVERY + 1
    result = Result("rate_shaping_burst", f"a burst of {count} misses at {LIMIT} requests/s allowed",
                    f"RateLimits(rpm={LIMIT * 60})", "no rate limits",
                    target=f"every call completed, at most {count // INJECT_EVERY + 1} upstream 429s (the injected ones)",
                    passed=passed, extra={"prompts": count, "candidate": candidate, "baseline": baseline})
    return result


def print_result(result: Result, out: TextIO) -> None:
    print(f"\n== {result.name}: {result.title}", file=out)
    if result.error is not None:
        print(f"   ERROR: {result.error}", file=out)
        return
    rows = []
    for side, label in (("candidate", result.candidate_label), ("baseline", result.baseline_label)):
        x = result.extra[side]
        rows.append([side, label, str(x["upstream_429"]), f"{x['over_limit']} + {x['injected']}", str(x["completed"]),
                     str(x["failed"]), f"{x['wall_s']:.1f}"])
    print(table(["", "what", "upstream 429s", "over limit + injected", "completed", "failed", "wall s"], rows,
                "llrrrrr"), file=out)
    base, cand = result.extra["baseline"]["upstream_429"], result.extra["candidate"]["upstream_429"]
    print(f"429s with shaping / without: {cand} / {base} = {cand / base if base else 0:.2f}", file=out)
    print(f"target: {result.target}  ->  {result.verdict}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    with report_stream(args.json) as (out, data):
        print_facts([("mode", "quick" if args.quick else "full")], out)
        result = run_guarded("rate_shaping_burst", lambda: bench_shaping(args.quick, out), out)
        print_result(result, out)
        if args.json:
            emit_json([result], data)
    return exit_code([result], args.strict)


if __name__ == "__main__":
    sys.exit(main())
