"""Operations of ``imgcache serve``: ``/metrics`` summed over ``--workers`` processes (prometheus_client's
multiprocess mode, with the real command, its uvicorn supervisor and worker processes), and the
``x-request-id`` of the answers the proxy makes (hits, its own errors) seen by the real ``openai`` SDK."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import openai
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from imgcache import Cache
from imgcache.proxy import ProxyConfig, ProxyServer
from imgcache.testing import FakeOpenAI
from imgcache.testing.servers import free_port, wait_until

IMAGES = "/v1/images/generations"
KEY = "sk-test-ops-0123456789abcdef"
UPSTREAM_ID = re.compile(r"req_[0-9a-f]{32}")  # FakeOpenAI's
OWN_ID = re.compile(r"req_imgcache_[0-9a-f]{32}")
REQUESTS = "imgcache_proxy_requests_total"


# -- the real command, with workers -------------------------------------------------------------------


class Served:
    """``python -m imgcache.cli serve --workers N`` in a subprocess (its log in a file: a pipe
    nobody reads would fill up and stall it)."""

    def __init__(self, upstream: str, tmp_path: Path, workers: int = 2, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.log_path = tmp_path / "serve.log"
        self._log: IO[str] = self.log_path.open("w")
        environment = {**os.environ, "IMGCACHE_DIR": str(tmp_path / "cache"), "IMGCACHE_NAMESPACE": "ops",
                       "TMPDIR": str(self.tmp), **env}
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imgcache.cli", "serve", "--workers", str(workers), "--no-semantic",
             "--upstream", upstream, "--port", str(self.port), "--graceful-timeout", "5"],
            env=environment, stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.base + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_healthy(self, timeout: float = 60.0) -> None:
        if not wait_until(lambda: self.healthy() or self.process.poll() is not None, timeout) or not self.healthy():
            pytest.fail(f"imgcache serve did not answer /healthz:\n{self.log()}")

    def generate(self, prompt: str) -> httpx.Response:
        """One generation on a new connection (so that any worker may take it)."""
        response = httpx.post(self.base + IMAGES, json={"model": "dall-e-3", "prompt": prompt,
                                                        "response_format": "b64_json"},
                              headers={"authorization": f"Bearer {KEY}"}, timeout=30)
        assert response.status_code == 200, response.text
        return response

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` on a new connection: {(sample name, sorted labels): value}."""
        response = httpx.get(self.base + "/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.text) for sample in family.samples}

    def stop(self) -> int | None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            return self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def serve(fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def serve(**env: str) -> Served:
        served = Served(fake_openai.base_url, tmp_path, **env)
        started.append(served)
        served.wait_healthy()
        return served

    yield serve
    for served in started:
        served.stop()


def total(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in scrape.items() if sample == name)


def gauge(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return scrape[(name, ())]


def worker_files(directory: Path) -> dict[str, set[int]]:
    """{file kind (``counter``, ``histogram``, ``gauge_livesum``): pids} in a multiprocess directory."""
    kinds: dict[str, set[int]] = {}
    for path in directory.glob("*.db"):
        kind, _, pid = path.stem.rpartition("_")
        kinds.setdefault(kind, set()).add(int(pid))
    return kinds


def live(directory: Path) -> set[int]:
    """The workers whose live gauges count (a file each)."""
    return worker_files(directory).get("gauge_livesum", set())


def requests_by_pid(directory: Path) -> dict[int, float]:
    """Requests each worker counted, read from its own counter file."""
    counted: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        counted[pid] = sum(value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
                           if json.loads(key)[1] == REQUESTS)
    return counted


def parent_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1])


def assert_never_down(scrapes: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]]) -> None:
    for before, after in itertools.pairwise(scrapes):
        for key, value in before.items():
            if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
                assert after.get(key, 0.0) >= value, key


def test_workers_metrics_are_summed_at_every_scrape(serve: Callable[..., Served]) -> None:
    served = serve()
    made = [path for path in served.tmp.iterdir() if path.name.startswith("imgcache-metrics-")]
    assert len(made) == 1, made  # serve() made one directory for the run, in TMPDIR
    directory = made[0]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
    assert wait_until(lambda: len(live(directory)) == 2, 60), served.log()  # both workers are up

    # Requests on new connections until both workers have served some (at least 20; bounded).
    sent, deadline = 0, time.monotonic() + 90
    while sent < 20 or len([pid for pid, n in requests_by_pid(directory).items() if n]) < 2:
        if sent >= 300 or time.monotonic() > deadline:
            pytest.fail(f"after {sent} requests, one worker served them all: {requests_by_pid(directory)}")
        served.generate(f"an ops fox {sent % 4}")
        sent += 1
    # A request is counted once its answer is sent: the last one's count may land just after.
    assert wait_until(lambda: sum(requests_by_pid(directory).values()) == sent, 10), requests_by_pid(directory)
    per_worker = requests_by_pid(directory)
    assert len(per_worker) == 2 and sum(per_worker.values()) == sent and all(per_worker.values())

    scrapes = [served.scrape() for _ in range(10)]
    assert [total(s, REQUESTS) for s in scrapes] == [sent] * 10
    hits = [total(s, "imgcache_proxy_hits_total") for s in scrapes]
    assert len(set(hits)) == 1 and 0 < hits[0] < sent
    assert all(total(s, "imgcache_proxy_request_seconds_count") == sent for s in scrapes)
    assert all(gauge(s, "imgcache_proxy_in_flight") == 1 for s in scrapes)  # the scrape itself
    assert all(gauge(s, "imgcache_proxy_namespaces") == 2 for s in scrapes)  # one open in each worker
    assert_never_down(scrapes)

    # SIGTTOU: the supervisor retires a worker gracefully; its lifespan's end takes its gauges
    # out (mark_process_dead) and its counts stay in the sums.
    before = worker_files(directory)
    served.process.send_signal(signal.SIGTTOU)
    assert wait_until(lambda: len(live(directory)) == 1, 30), served.log()
    (retired,) = before["gauge_livesum"] - live(directory)
    assert retired in worker_files(directory)["counter"]
    scrapes += [served.scrape() for _ in range(3)]
    assert all(total(s, REQUESTS) == sent and gauge(s, "imgcache_proxy_namespaces") == 1 for s in scrapes[-3:])

    # A worker killed outright: the supervisor starts another, which drops the dead one's gauges.
    (survivor,) = live(directory)
    if parent_of(survivor) != served.process.pid:
        pytest.skip("no /proc to check that the worker is this test's")
    os.kill(survivor, signal.SIGKILL)
    assert wait_until(lambda: len(live(directory) - {survivor}) == 1 and survivor not in live(directory),
                      60), served.log()
    served.wait_healthy()
    scrapes += [served.scrape() for _ in range(3)]
    for scrape in scrapes[-3:]:
        assert total(scrape, REQUESTS) == sent  # the dead workers' counts are kept
        assert gauge(scrape, "imgcache_proxy_namespaces") == 0 and gauge(scrape, "imgcache_proxy_in_flight") == 1
    served.generate("an ops fox 0")
    scrapes.append(served.scrape())
    assert total(scrapes[-1], REQUESTS) == sent + 1
    assert_never_down(scrapes)

    assert served.stop() in (0, -signal.SIGTERM)
    assert not directory.exists()  # removed with the run
    log = served.log()
    assert "Traceback" not in log, log


def test_workers_use_the_operators_metrics_directory(serve: Callable[..., Served], tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    served = serve(PROMETHEUS_MULTIPROC_DIR=str(directory))
    for n in range(6):
        served.generate(f"an operator's fox {n % 2}")
    assert all(total(served.scrape(), REQUESTS) == 6 for _ in range(4))
    assert not [path for path in served.tmp.iterdir() if path.name.startswith("imgcache-metrics-")]
    assert served.stop() in (0, -signal.SIGTERM)
    files = worker_files(directory)  # kept for the operator; live gauges gone with their workers
    assert files.get("counter") and "gauge_livesum" not in files
    assert sum(requests_by_pid(directory).values()) == 6


def test_a_missing_operator_metrics_directory_is_refused(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    env = {**os.environ, "IMGCACHE_DIR": str(tmp_path / "cache"),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
    done = subprocess.run(
        [sys.executable, "-m", "imgcache.cli", "serve", "--workers", "2", "--no-semantic", "--upstream",
         fake_openai.base_url, "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 2 and "PROMETHEUS_MULTIPROC_DIR" in done.stderr, done.stderr


def test_apps_in_one_process_keep_their_own_counts(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with Cache("ops", directory=tmp_path / "cache", semantic=False) as cache, \
            ProxyServer(ProxyConfig(upstream=fake_openai.base_url), cache) as first, \
            ProxyServer(ProxyConfig(upstream=fake_openai.base_url), cache) as second:
        assert not first.proxy.metrics.multiprocess
        for proxy, times in ((first, 3), (second, 1)):
            for _ in range(times):
                httpx.post(proxy.base_url + "/images/generations", json={"model": "dall-e-3", "prompt": "a"},
                           headers={"authorization": f"Bearer {KEY}"}).raise_for_status()
        counts = [total({(s.name, tuple(sorted(s.labels.items()))): s.value
                         for f in text_string_to_metric_families(httpx.get(p.url + "/metrics").text)
                         for s in f.samples}, REQUESTS) for p in (first, second)]
        assert counts == [3, 1]


# -- request ids ---------------------------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


def test_hits_and_the_proxys_own_errors_carry_a_request_id_of_their_own(fake_openai: FakeOpenAI,
                                                                       tmp_path: Path) -> None:
    access = logging.getLogger("imgcache.proxy.access")
    lines = Lines()
    access.addHandler(lines)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        with Cache("ops", directory=tmp_path / "cache", semantic=False) as cache, \
                ProxyServer(ProxyConfig(upstream=fake_openai.base_url), cache) as proxy, \
                openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0) as client:

            def generate(prompt: str) -> Any:
                return client.images.with_raw_response.generate(prompt=prompt, model="dall-e-3",
                                                                response_format="b64_json")

            miss = generate("a fox with an id")
            assert miss.headers["x-imgcache"] == "miss"
            assert miss.request_id is not None and UPSTREAM_ID.fullmatch(miss.request_id)  # the upstream's
            hits = [generate("a fox with an id") for _ in range(3)]
            assert all(hit.headers["x-imgcache"].startswith("hit") for hit in hits)
            ids = [hit.request_id for hit in hits]
            assert all(id_ is not None and OWN_ID.fullmatch(id_) for id_ in ids), ids
            assert len({*ids, miss.request_id}) == 4  # a new one for each hit
            assert hits[0].parse()._request_id == ids[0]  # what the SDK's parsed result carries

            no_store = client.images.with_raw_response.generate(
                prompt="a fox with an id", model="dall-e-3", response_format="b64_json",
                extra_headers={"x-imgcache-control": "no-store"})
            assert no_store.headers["x-imgcache"].endswith("no-store") and OWN_ID.fullmatch(no_store.request_id)

            with pytest.raises(openai.PermissionDeniedError) as refused:  # the proxy's own error
                client.images.generate(prompt="a fox", model="dall-e-3",
                                       extra_headers={"x-imgcache-namespace": "elsewhere"})
            assert refused.value.request_id and OWN_ID.fullmatch(refused.value.request_id)

            fake_openai.fail_next(500, path=IMAGES)  # an upstream error: relayed with the upstream's id
            with pytest.raises(openai.InternalServerError) as relayed:
                client.images.generate(prompt="a failing fox", model="dall-e-3")
            assert relayed.value.request_id and UPSTREAM_ID.fullmatch(relayed.value.request_id)
            assert relayed.value.response.headers["x-imgcache"] == "error; reason=upstream"

            down = httpx.post(proxy.base_url + "/chat/completions", content=b"{not json",
                              headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
            assert down.status_code == 400 and OWN_ID.fullmatch(down.headers["x-request-id"])
    finally:
        access.removeHandler(lines)
        access.setLevel(level)

    logged = {line.get("request_id") or line.get("upstream_request_id"): line for line in lines.lines}
    assert "upstream_request_id" in logged[miss.request_id] and "request_id" not in logged[miss.request_id]
    assert all("request_id" in logged[id_] and "upstream_request_id" not in logged[id_] for id_ in ids)
    assert "upstream_request_id" in logged[relayed.value.request_id]
    assert "request_id" in logged[refused.value.request_id]
