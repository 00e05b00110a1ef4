"""The caching proxy: what a hit adds over a direct call, and hits per second under load.

    python benchmarks/bench_proxy.py [--quick] [--json] [--strict] [--seconds S] [--concurrency N]

Three processes on loopback: FakeOpenAI (latency 0, 256x256 images), ``imgcache serve`` (one
worker, uvicorn with uvloop and httptools where installed, embedded cache in a temporary
directory, ``--no-semantic``, JSON access log to a file), and this one, the client.

* ``proxy_hit``: ``POST /v1/images/generations`` answered from the proxy's cache, against the
  same request sent straight to the upstream (which makes a new image each call). Both over
  one keep-alive ``httpx.Client``, in alternating rounds.
* ``proxy_forward``: ``GET /v1/models`` through the proxy (forwarded, streamed back) against
  the same request straight to the upstream: the proxy's own cost on a pass-through.
* ``proxy_miss``: a new prompt each call through the proxy (forward, relay, store) against the
  same straight to the upstream.
* ``proxy_hits_per_second``: ``--concurrency`` keep-alive connections (a small asyncio HTTP/1.1
  load generator in this process) sending cached generation requests as fast as the proxy
  answers, for ``--seconds``; the baseline is the same load on ``GET /healthz`` (uvicorn,
  Starlette and the proxy's middleware, no cache), measured right after. Latencies are per
  request under that load. Every answer is checked (status 200, ``x-imgcache: hit``), and the
  proxy's ``/metrics`` must show no upstream call during the run.

No targets in the issue: the figures are reported. The client shares the machine's cores
with the proxy, so the throughput is a floor for a dedicated host.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
)

import httpx

NAMES = ("proxy_hit", "proxy_forward", "proxy_miss", "proxy_hits_per_second")
KEY = "sk-bench-proxy-0123456789"
HIT_BODY = {"model": "dall-e-3", "prompt": "a lighthouse at dusk", "response_format": "b64_json"}
HIT_PROMPTS = 8
"""Distinct cached prompts the load cycles through."""


@dataclass(frozen=True)
class Loops:
    rounds: int
    per_round: int
    warmup: int


LOOPS = {  # (quick, default)
    "proxy_hit": (Loops(6, 40, 20), Loops(20, 150, 50)),
    "proxy_forward": (Loops(6, 40, 20), Loops(20, 150, 50)),
    "proxy_miss": (Loops(4, 15, 5), Loops(16, 40, 10)),
}


def _free_port() -> int:
    from imgcache.testing.servers import free_port

    return free_port()


class Servers:
    """FakeOpenAI and ``imgcache serve`` in their own processes."""

    def __init__(self, image_size: int, out: TextIO) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="imgcache-bench-proxy-"))
        self.out = out
        self._stack = contextlib.ExitStack()
        fake_code = ("import sys\nfrom imgcache.testing import FakeOpenAI\n"
                     f"fake = FakeOpenAI(image_size=({image_size}, {image_size})).start()\n"
                     "print(fake.base_url, flush=True)\nsys.stdin.read()\nfake.stop()\n")
        self.fake = subprocess.Popen([sys.executable, "-c", fake_code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self._stack.callback(self._end, self.fake)
        assert self.fake.stdout is not None
        self.upstream = self.fake.stdout.readline().strip()
        if not self.upstream.startswith("http"):
            raise RuntimeError("FakeOpenAI did not start")
        self.port = _free_port()
        env = {**os.environ, "IMGCACHE_DIR": str(self.tmp / "cache"), "IMGCACHE_NAMESPACE": "bench"}
        for name in ("IMGCACHE_REDIS_URL", "IMGCACHE_S3_BUCKET"):
            env.pop(name, None)
        self.log = open(self.tmp / "proxy.log", "w")  # noqa: SIM115 - closed with the stack
        self._stack.callback(self.log.close)
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "imgcache.cli", "serve", "--port", str(self.port), "--upstream",
             self.upstream, "--no-semantic"], env=env, stderr=self.log, stdin=subprocess.DEVNULL)
        self._stack.callback(self._end, self.proxy)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            if self.proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"imgcache serve did not start: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        self.log.flush()
        return (self.tmp / "proxy.log").read_text()[-3000:]

    @staticmethod
    def _end(process: subprocess.Popen[Any]) -> None:
        if process.poll() is None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
            if match and all(part in (match[1] or "").split(",") for part in wanted.split(",") if part):
                total += float(match[2])
        return total

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _headers() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}", "content-type": "application/json"}


def _added(result: Result) -> None:
    assert result.candidate is not None and result.baseline is not None
    added = (result.candidate.p50 - result.baseline.p50) / 1000
    result.extra["added_ms_p50"] = round(added, 4)
    result.extra["added_ms_mean"] = round((result.candidate.mean - result.baseline.mean) / 1000, 4)
    result.notes.append(f"added by the proxy: {added:+.3f} ms at p50 ({result.extra['added_ms_mean']:+.3f} ms "
                        "in the mean)")


# -- sequential latency --------------------------------------------------------------------------


def bench_hit(servers: Servers, quick: bool) -> Result:
    result = Result("proxy_hit", "hit through the proxy vs the same call straight to the upstream "
                    "(FakeOpenAI, latency 0, 256x256 PNG as b64_json)",
                    "POST /v1/images/generations, a cache hit", "the same request to the upstream")
    loops = LOOPS[result.name][0 if quick else 1]
    with httpx.Client(timeout=30) as client:
        proxied, direct = servers.url + "/v1/images/generations", servers.upstream + "/images/generations"
        first = client.post(proxied, json=HIT_BODY, headers=_headers())
        first.raise_for_status()
        result.extra["answer_bytes"] = len(first.content)

        def hit() -> Any:
            response = client.post(proxied, json=HIT_BODY, headers=_headers())
            if not response.headers.get("x-imgcache", "").startswith("hit"):
                raise RuntimeError(f"expected a hit, got {response.status_code} {response.headers.get('x-imgcache')}")
            return response

        def baseline() -> Any:
            return client.post(direct, json=HIT_BODY, headers=_headers()).raise_for_status()

        def floor() -> Any:
            return client.get(servers.url + "/healthz").raise_for_status()

        misses = servers.metric("imgcache_proxy_requests_total", outcome="miss")
        result.candidate, result.baseline, health = measure(
            [hit, baseline, floor], rounds=loops.rounds, per_round=loops.per_round, warmup=loops.warmup)
        if servers.metric("imgcache_proxy_requests_total", outcome="miss") != misses:
            raise RuntimeError("a hit went upstream")
    _added(result)
    result.extra["healthz"] = health.as_dict()
    result.extra["hit_over_healthz_ms_p50"] = round((result.candidate.p50 - health.p50) / 1000, 4)
    result.notes.append(f"reference, same rounds: GET /healthz on the proxy (HTTP, Starlette, middleware, no "
                        f"cache) p50 {fmt_us(health.p50)} µs: the cache path of a hit (parse, key, lookup, "
                        f"render) adds {result.extra['hit_over_healthz_ms_p50']:+.3f} ms to it")
    result.notes.append(f"the answer is {result.extra['answer_bytes']:,} bytes of JSON; the upstream makes "
                        "and encodes a new PNG each call, the proxy re-encodes the stored one as base64")
    return result


def bench_forward(servers: Servers, quick: bool) -> Result:
    result = Result("proxy_forward", "GET /v1/models through the proxy (forwarded, streamed back) vs straight",
                    "GET /v1/models via the proxy", "GET /v1/models to the upstream")
    loops = LOOPS[result.name][0 if quick else 1]
    with httpx.Client(timeout=30) as client:
        def proxied() -> Any:
            return client.get(servers.url + "/v1/models", headers=_headers()).raise_for_status()

        def direct() -> Any:
            return client.get(servers.upstream + "/models", headers=_headers()).raise_for_status()

        result.candidate, result.baseline = compare(proxied, direct, rounds=loops.rounds,
                                                    per_round=loops.per_round, warmup=loops.warmup)
    _added(result)
    return result


def bench_miss(servers: Servers, quick: bool) -> Result:
    result = Result("proxy_miss", "miss through the proxy (forward, relay, store) vs straight to the upstream",
                    "POST /v1/images/generations, a miss", "the same request to the upstream")
    loops = LOOPS[result.name][0 if quick else 1]
    counter = itertools.count()
    with httpx.Client(timeout=30) as client:
        def miss() -> Any:
            body = {**HIT_BODY, "prompt": f"bench miss {next(counter)}"}
            response = client.post(servers.url + "/v1/images/generations", json=body, headers=_headers())
            if response.headers.get("x-imgcache") != "miss":
                raise RuntimeError(f"expected a miss, got {response.headers.get('x-imgcache')}")
            return response

        def direct() -> Any:
            body = {**HIT_BODY, "prompt": f"bench direct {next(counter)}"}
            return client.post(servers.upstream + "/images/generations", json=body,
                               headers=_headers()).raise_for_status()

        result.candidate, result.baseline = compare(miss, direct, rounds=loops.rounds,
                                                    per_round=loops.per_round, warmup=loops.warmup)
    _added(result)
    result.notes.append("a miss also decodes the answer's base64 and writes the image and the entry to the "
                        "memory tier and two files; with semantic matching on (the default) it also embeds "
                        "the prompt (~15 ms on CPU)")
    return result


# -- throughput ----------------------------------------------------------------------------------


def _raw_request(method: str, path: str, host: str, body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"host: {host}", f"authorization: Bearer {KEY}",
            "content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    if length is None:
        raise RuntimeError(f"an answer without content-length: {head[:200]!r}")
    await reader.readexactly(int(length[1]))
    return status, head


async def _load(port: int, requests: list[bytes], marker: bytes, concurrency: int, seconds: float,
                max_requests: int) -> tuple[list[int], float]:
    """Closed-loop load: each connection sends its next request when the last was answered.
    Returns the per-request latencies (ns) and the elapsed seconds."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    started = time.monotonic()
    deadline = started + seconds

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in itertools.count(index):
                if time.monotonic() >= deadline or len(latencies) >= max_requests:
                    return
                sent = clock()
                writer.write(requests[n % len(requests)])
                status, head = await _read_answer(reader)
                latencies.append(clock() - sent)
                if status != 200 or marker not in head:
                    raise RuntimeError(f"unexpected answer under load: {head[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(concurrency)))
    return latencies, time.monotonic() - started


def bench_hits_per_second(servers: Servers, quick: bool, seconds: float, concurrency: int) -> Result:
    result = Result("proxy_hits_per_second",
                    f"cache hits under load: {concurrency} keep-alive connections for {seconds:g} s "
                    "(closed loop, loopback)", "POST /v1/images/generations, hits",
                    "GET /healthz under the same load")
    host = f"127.0.0.1:{servers.port}"
    bodies = [{**HIT_BODY, "prompt": f"a lighthouse at dusk, view {i}"} for i in range(HIT_PROMPTS)]
    with httpx.Client(timeout=30) as client:
        for body in bodies:  # fill the cache
            client.post(servers.url + "/v1/images/generations", json=body, headers=_headers()).raise_for_status()
    hits = [_raw_request("POST", "/v1/images/generations", host, json.dumps(body).encode()) for body in bodies]
    health = [_raw_request("GET", "/healthz", host)]
    upstream_before = servers.metric("imgcache_proxy_upstream_seconds_count")
    hit_latencies, hit_elapsed = asyncio.run(_load(servers.port, hits, b"x-imgcache: hit", concurrency,
                                                   seconds, 2_000_000))
    upstream_calls = servers.metric("imgcache_proxy_upstream_seconds_count") - upstream_before
    if upstream_calls:
        raise RuntimeError(f"{upstream_calls:g} upstream calls during the hit load")
    health_latencies, health_elapsed = asyncio.run(_load(servers.port, health, b"200 OK", concurrency,
                                                         seconds, 2_000_000))
    result.candidate = Figures.from_ns(hit_latencies)
    result.baseline = Figures.from_ns(health_latencies)
    per_second = len(hit_latencies) / hit_elapsed
    health_per_second = len(health_latencies) / health_elapsed
    result.extra.update({"hits_per_second": round(per_second, 1), "healthz_per_second": round(health_per_second, 1),
                         "concurrency": concurrency, "seconds": seconds, "hits": len(hit_latencies),
                         "upstream_calls": int(upstream_calls)})
    result.notes.append(f"{per_second:,.0f} hits/s ({len(hit_latencies):,} in {hit_elapsed:.1f} s), "
                        f"no upstream call; /healthz under the same load: {health_per_second:,.0f} req/s")
    result.notes.append(f"latency under load: p50 {fmt_us(result.candidate.p50)} µs, p99 "
                        f"{fmt_us(result.candidate.p99)} µs; one proxy worker, the load generator on the "
                        "same 2 cores")
    return result


# -- main ----------------------------------------------------------------------------------------


def _versions() -> list[tuple[str, str]]:
    names = ("imgcache", "starlette", "uvicorn", "httptools", "uvloop", "httpx")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    return [("packages", ", ".join(versions))]


@contextlib.contextmanager
def _servers(image_size: int, out: TextIO) -> Iterator[Servers]:
    servers = Servers(image_size, out)
    try:
        yield servers
    finally:
        servers.close()


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="length of the load run (10; 2 with --quick)")
    p.add_argument("--concurrency", type=int, default=32, help="connections of the load run")
    p.add_argument("--image-size", type=int, default=256, help="side of the upstream's images")
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=f"run only these ({', '.join(NAMES)})")
    args = p.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 10.0)
    selected = args.only or list(NAMES)
    results: list[Result] = []
    with report_stream(args.json) as (out, data):
        print_facts(_versions(), out)
        try:
            with _servers(args.image_size, out) as servers:
                runs = {
                    "proxy_hit": lambda: bench_hit(servers, args.quick),
                    "proxy_forward": lambda: bench_forward(servers, args.quick),
                    "proxy_miss": lambda: bench_miss(servers, args.quick),
                    "proxy_hits_per_second": lambda: bench_hits_per_second(servers, args.quick, seconds,
                                                                            args.concurrency),
                }
                for name in selected:
                    result = run_guarded(name, runs[name], out)
                    results.append(result)
                    report(result, out)
                    if result.error is not None:
                        print(servers.log_tail(), file=out)
        except Exception as exc:  # noqa: BLE001 - the servers did not start: reported as errors
            results = [Result(name, "could not run", "", "", error=f"{type(exc).__name__}: {exc}")
                       for name in selected]
            for result in results:
                report(result, out)
        summary(results, out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
