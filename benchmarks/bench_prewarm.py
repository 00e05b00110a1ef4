"""The prewarm job: how close it runs to the rate limit with 429s injected, and how many
upstream calls it saves on an input with duplicates and already-cached prompts.

    python benchmarks/bench_prewarm.py [--quick] [--json] [--strict]

Both run ``imgcache.prewarm.prewarm`` over the real OpenAI SDK against the local fake server
(``imgcache.testing.FakeOpenAI``), on the embedded cache (memory + a temporary directory).

``prewarm_rate_limit``: N prompts at ``rpm`` requests per minute, 4 calls at once, the fake
answering after ``latency`` seconds; every 20th request is answered 429, alternately with
``Retry-After: 1`` and without one (back-off). The figure is images achieved / images the
limit allows over the same window (from the first request's arrival at the server to the
last one's: a token bucket allows ``1 + rpm / 60 * window``). A 429'd request spends a slot
of the limit without making an image, so 1 in 20 caps the ratio near 0.95. The baseline is
the usual cron script: one call after another, ``time.sleep(60 / rpm)`` between them, the
SDK's own retries. Target: 0.85 <= ratio <= 1 (close to the limit, never over it).

``prewarm_calls_saved``: an input of L lines holding U unique prompts (each 1 to 4 times,
respelled: case, spaces, a trailing period), of which C were cached beforehand by live
``wrap()`` calls. The baseline is a loop that calls for every line (L calls); the ideal is
U - C. Target: prewarm makes exactly U - C calls (and a dry run predicts them).

Exit status is 0 whatever the figures unless a benchmark could not run; with ``--strict`` a
missed target also exits 1.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, emit_json, exit_code, parser, print_facts, report_stream, run_guarded, table

from imgcache import Cache, wrap
from imgcache.prewarm import prewarm
from imgcache.testing import FakeOpenAI

MODEL = {"model": "dall-e-2", "size": "256x256"}
INJECT_EVERY = 20
RETRY_AFTER = 1.0
MIN_RATIO = 0.85
# (rpm, prompts, baseline prompts, latency s) for (quick, default)
RATE_RUNS = ((120.0, 30, 12, 0.05), (60.0, 120, 40, 0.2))
# (unique prompts, share cached beforehand) for (quick, default)
SAVED_RUNS = ((60, 0.4), (400, 0.4))


class Arrivals:
    """Times at which requests reached the fake server (polled: ~1 ms resolution), with a
    429 injected ahead of every ``every``-th request (alternately with Retry-After)."""

    def __init__(self, fake: FakeOpenAI, every: int = INJECT_EVERY) -> None:
        self.fake = fake
        self.every = every
        self.times: list[float] = []
        self.injected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Arrivals:
        self._arm(0)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.fake.reset()  # drops a failure queued for a request that never came

    def _arm(self, seen: int) -> None:
        # Queued now, it answers request number seen + 1 + (every - 1 - seen % every) or so:
        # one request in `every` gets a 429, whatever the concurrency.
        if (seen + 1) % self.every == 0:
            self.fake.fail_next(429, retry_after=RETRY_AFTER if self.injected % 2 == 0 else None,
                                path="/v1/images/generations")
            self.injected += 1

    def _watch(self) -> None:
        seen = 0
        while not self._stop.is_set():
            calls = self.fake.calls()
            now = time.perf_counter()
            while seen < calls:
                seen += 1
                self.times.append(now)
                self._arm(seen)
            time.sleep(0.001)

    @property
    def window(self) -> float:
        return self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0


def _ratio(images: int, rpm: float, window: float) -> float:
    return images / (1 + rpm / 60 * window)


def bench_rate_limit(quick: bool, out: TextIO) -> Result:
    rpm, count, baseline_count, latency = RATE_RUNS[0 if quick else 1]
    import openai

    result = Result("prewarm_rate_limit",
                    f"images/min achieved / allowed at {rpm:g} rpm, 1 request in {INJECT_EVERY} answered 429",
                    "prewarm (token bucket, 4 at once)", "loop: call, sleep(60/rpm), SDK retries",
                    target=f"{MIN_RATIO} <= ratio <= 1")
    tmp = Path(tempfile.mkdtemp(prefix="imgcache-bench-prewarm-"))
    try:
        with FakeOpenAI(image_size=(64, 64), latency=latency) as fake:
            client = openai.OpenAI(base_url=fake.base_url, api_key="bench")
            prompts = [f"catalogue shot {i}, white background" for i in range(count)]
            with Cache(directory=tmp / "a", semantic=False) as cache, Arrivals(fake) as seen:
                report = prewarm(prompts, cache=cache, client=client, params=MODEL, rpm=rpm, concurrency=4,
                                 semantic=False)
            ratio = _ratio(report.images, rpm, seen.window)

            baseline_client = openai.OpenAI(base_url=fake.base_url, api_key="bench", max_retries=5)
            images = 0
            with Arrivals(fake) as base_seen:
                for prompt in prompts[:baseline_count]:
                    baseline_client.images.generate(prompt=prompt, response_format="b64_json", **MODEL)
                    images += 1
                    time.sleep(60 / rpm)
            base_ratio = _ratio(images, rpm, base_seen.window)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.passed = MIN_RATIO <= ratio <= 1.0 + 1e-6 and report.generated == count
    result.extra.update(
        rpm=rpm, prompts=count, latency_s=latency, images=report.images, requests=len(seen.times),
        injected_429=seen.injected, rate_limited=report.rate_limited, retries=report.retries,
        window_s=round(seen.window, 3), images_per_minute=round(60 * (report.images - 1) / seen.window, 2)
        if seen.window else None, ratio=round(ratio, 4),
        baseline={"prompts": images, "requests": len(base_seen.times), "injected_429": base_seen.injected,
                  "window_s": round(base_seen.window, 3), "ratio": round(base_ratio, 4)},
    )
    result.notes.append(f"prewarm: {report.images} images from {len(seen.times)} requests in "
                        f"{seen.window:.1f} s ({seen.injected} answered 429; {report.retries} retries)")
    result.notes.append(f"a 429'd request spends a slot without an image: with 1 in {INJECT_EVERY} the "
                        f"ratio cannot pass about {1 - 1 / INJECT_EVERY:.2f}")
    return result


def _respell(prompt: str, rng: random.Random) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return prompt.upper()
    if choice == 1:
        return "  " + prompt.replace(" ", "  ") + " "
    if choice == 2:
        return prompt.capitalize() + "."
    return prompt


def bench_calls_saved(quick: bool, out: TextIO) -> Result:
    unique, share = SAVED_RUNS[0 if quick else 1]
    import openai

    rng = random.Random(5)
    prompts = [f"{colour} {thing} on a {place}, studio photo"
               for colour, thing, place in zip(
                   (rng.choice(["red", "blue", "green", "black", "white", "golden"]) for _ in range(unique)),
                   (f"product {i}" for i in range(unique)),
                   (rng.choice(["table", "beach", "shelf", "rug"]) for _ in range(unique)))]
    lines = [_respell(p, rng) for p in prompts for _ in range(rng.randint(1, 4))]
    rng.shuffle(lines)
    cached = rng.sample(prompts, int(unique * share))
    result = Result("prewarm_calls_saved",
                    f"upstream calls for {len(lines)} lines: {unique} unique prompts, {len(cached)} cached",
                    "prewarm", "one call a line", target="calls == unique - cached (the ideal)")
    tmp = Path(tempfile.mkdtemp(prefix="imgcache-bench-prewarm-"))
    try:
        with FakeOpenAI(image_size=(64, 64)) as fake, Cache(directory=tmp, semantic=False) as cache:
            client = openai.OpenAI(base_url=fake.base_url, api_key="bench", max_retries=0)
            live = wrap(client, cache)
            for prompt in cached:
                live.images.generate(prompt=prompt, **MODEL)
            before = fake.calls()
            dry = prewarm(lines, cache=cache, client=client, params=MODEL, dry_run=True, semantic=False)
            report = prewarm(lines, cache=cache, client=client, params=MODEL, concurrency=4, semantic=False)
            calls = fake.calls() - before
            started = time.perf_counter()
            again = prewarm(lines, cache=cache, client=client, params=MODEL, semantic=False)
            resume = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ideal = unique - len(cached)
    result.passed = calls == ideal and dry.would_generate == ideal and again.calls == 0
    result.extra.update(lines=len(lines), unique=unique, cached_before=len(cached), duplicates=report.duplicates,
                        calls=calls, ideal=ideal, baseline_calls=len(lines), dry_run_would_generate=dry.would_generate,
                        saved_share=round(1 - calls / len(lines), 4), dollars=round(report.spent_usd, 4),
                        baseline_dollars=round(len(lines) * 0.016, 4), resume_seconds=round(resume, 3))
    result.notes.append(f"a second run over the same {len(lines)} lines made {again.calls} calls and took "
                        f"{resume:.2f} s (every prompt found cached: manifests read, no images)")
    return result


def print_result(result: Result, out: TextIO) -> None:
    print(f"\n== {result.name}: {result.title}", file=out)
    if result.error is not None:
        print(f"   ERROR: {result.error}", file=out)
        return
    x = result.extra
    if result.name == "prewarm_rate_limit":
        base = x["baseline"]
        rows = [["candidate", result.candidate_label, str(x["images"]), str(x["requests"]), f"{x['window_s']:.1f}",
                 f"{x['ratio']:.3f}"],
                ["baseline", result.baseline_label, str(base["prompts"]), str(base["requests"]),
                 f"{base['window_s']:.1f}", f"{base['ratio']:.3f}"]]
        print(table(["", "what", "images", "requests", "window s", "achieved/allowed"], rows, "llrrrr"), file=out)
    else:
        rows = [["candidate", result.candidate_label, str(x["calls"]), f"{x['saved_share']:.1%}", f"${x['dollars']:.2f}"],
                ["baseline", result.baseline_label, str(x["baseline_calls"]), "0.0%", f"${x['baseline_dollars']:.2f}"]]
        print(table(["", "what", "upstream calls", "saved", "dollars"], rows, "llrrr"), file=out)
        print(f"ideal: {x['ideal']} calls ({x['unique']} unique - {x['cached_before']} cached); dry run predicted "
              f"{x['dry_run_would_generate']}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    print(f"target: {result.target}  ->  {result.verdict}", file=out)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    results: list[Result] = []
    benches: list[tuple[str, Callable[[bool, TextIO], Result]]] = [
        ("prewarm_rate_limit", bench_rate_limit), ("prewarm_calls_saved", bench_calls_saved)]
    with report_stream(args.json) as (out, data):
        import openai

        print_facts([("openai", openai.__version__), ("mode", "quick" if args.quick else "full")], out)
        for name, bench in benches:
            result = run_guarded(name, lambda: bench(args.quick, out), out)
            results.append(result)
            print_result(result, out)
        print("\n== summary", file=out)
        print(table(["benchmark", "figure", "target", "result"], [
            [r.name, _headline(r), r.target or "none", r.verdict] for r in results], "llll"), file=out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


def _headline(result: Result) -> str:
    x: dict[str, Any] = result.extra
    if result.error is not None:
        return "-"
    if result.name == "prewarm_rate_limit":
        return f"ratio {x['ratio']:.3f} (baseline {x['baseline']['ratio']:.3f})"
    return f"{x['calls']} calls of {x['baseline_calls']} ({x['saved_share']:.1%} saved; ideal {x['ideal']})"


if __name__ == "__main__":
    sys.exit(main())
